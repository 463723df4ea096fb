"""The feedback app reaches a secured broker with the same settings as the librdkafka clients."""

from __future__ import annotations

import faust

from services.settings import Settings
from stream_jobs.feedback.app import credentials


def test_plaintext_needs_no_credentials() -> None:
    assert credentials(Settings()) is None


def test_sasl_over_tls_carries_user_mechanism_and_a_tls_context() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="analyst-app", kafka_sasl_password="s3cret",
    )  # fmt: skip
    creds = credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("analyst-app", "s3cret")
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context is not None


def test_sasl_without_tls_stays_plaintext() -> None:
    creds = credentials(Settings(kafka_security_protocol="SASL_PLAINTEXT",
                                 kafka_sasl_username="u", kafka_sasl_password="p"))  # fmt: skip
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert creds.mechanism.value == "PLAIN"


def test_tls_alone_gives_a_tls_context() -> None:
    assert isinstance(credentials(Settings(kafka_security_protocol="SSL")), faust.SSLCredentials)
