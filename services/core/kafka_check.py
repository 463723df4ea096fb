"""Whether this client can reach and log in to Kafka, said in one line that names the cause.

librdkafka retries a refused login, an untrusted certificate or an unreachable broker for as
long as a message may wait (a producer saw only "not acknowledged in 60 s" after a minute of
its own log lines). Every command and component asks first, with a deadline: the broker's
errors arrive through ``error_cb`` within a second or two, and the first decisive one names
the cause.
"""

from __future__ import annotations

import time
from typing import Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from services.core.errors import UserError
from services.core.kafka_config import librdkafka
from services.core.settings import KafkaSettings

CHECK_TIMEOUT_S: Final = 10.0
UNREACHABLE_AFTER_S: Final = 3.0  # refused connections for this long: unreachable, not starting
_TRANSPORT = (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE)


class KafkaUnavailable(UserError):
    """Kafka cannot be used with these settings; the message says why, in one line."""


def check_kafka(kafka: KafkaSettings, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Return once the cluster answers this client's login; else raise KafkaUnavailable."""
    errors: list[KafkaError] = []  # what the client's own retries met (served by poll)
    admin = AdminClient(librdkafka(kafka) | {"error_cb": errors.append})
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < timeout_s:
        try:
            admin.list_topics(timeout=min(1.0, max(timeout_s - elapsed, 0.1)))
            return
        except KafkaException:
            admin.poll(0.1)
        if any(_decisive(e) for e in errors) or (
            elapsed > UNREACHABLE_AFTER_S and any(e.code() in _TRANSPORT for e in errors)
        ):
            break
    raise KafkaUnavailable(f"Kafka at {kafka.servers()}: {describe(kafka, errors)}")


def _decisive(error: KafkaError) -> bool:
    """An error that will not clear by waiting (a login or a certificate refused)."""
    return error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL) or _tls(error)


def _tls(error: KafkaError) -> bool:
    return "SSL" in error.str() or "certificate" in error.str()


def describe(kafka: KafkaSettings, errors: list[KafkaError]) -> str:
    """The cause, from the most telling error librdkafka reported."""
    by_code = {e.code(): e for e in errors}
    if auth := by_code.get(KafkaError._AUTHENTICATION):
        who = f"SASL {kafka.sasl_mechanism or 'PLAIN'} as {kafka.sasl_username!r}"
        return f"authentication failed ({who}): {_short(auth)}"
    tls = next((e for e in errors if e.code() == KafkaError._SSL or _tls(e)), None)
    if tls is not None:
        text = tls.str()
        if "verify failed" in text:
            return ("TLS: the broker's certificate was refused (check "
                    f"FRAUDSTREAM_KAFKA_SSL_CA_LOCATION): {_short(tls)}")  # fmt: skip
        return ("TLS: the broker refused this client (a missing or unknown client certificate? "
                f"FRAUDSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION): {_short(tls)}")  # fmt: skip
    transport = next((e for e in errors if e.code() in _TRANSPORT), None)
    if transport is not None:
        return f"broker unreachable: {_short(transport)}"
    if errors:
        return f"no answer: {_short(errors[-1])}"
    return "no answer within the deadline"


def _short(error: KafkaError, limit: int = 200) -> str:
    text = " ".join(error.str().split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
