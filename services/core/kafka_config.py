"""The Kafka connection (``KafkaSettings``) rendered for each client library the project runs.

- librdkafka (confluent-kafka): the producer, readers, admin and lag probe;
- the Java clients of the Flink job's Kafka connector: properties, with an escaped JAAS line
  and the client certificate and key as one PEM key store file (``java_keystore``): never
  inlined, since the properties travel in the job's SQL text and graph;
- aiokafka, under faust: keyword arguments with an ``ssl.SSLContext``.

Every setting reaches every rendering (``tests/unit/test_kafka_config.py``).
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

from services.core.settings import KafkaSettings, SettingsError

KEYSTORE_FILE = "kafka-keystore.pem"
_LOGIN_MODULE = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


CLIENT_LOG = logging.getLogger("fraudstream.kafka.client")
"""librdkafka's own log lines: silent unless ``kafka_client_log`` (errors are reported by each
command in one line of its own; the client's retries would bury them)."""
CLIENT_LOG.addHandler(logging.NullHandler())
CLIENT_LOG.propagate = False


def librdkafka(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka settings for the configured brokers and security."""
    if kafka.client_log and not any(
        isinstance(h, logging.StreamHandler) for h in CLIENT_LOG.handlers
    ):
        CLIENT_LOG.addHandler(logging.StreamHandler())
    conf: dict[str, Any] = {
        "logger": CLIENT_LOG,
        "bootstrap.servers": kafka.servers(),
        "security.protocol": kafka.security_protocol,
        "sasl.mechanism": kafka.sasl_mechanism,
        "sasl.username": kafka.sasl_username,
        "sasl.password": _secret(kafka.sasl_password),
        "ssl.ca.location": kafka.ssl_ca_location,
        "ssl.certificate.location": kafka.ssl_certificate_location,
        "ssl.key.location": kafka.ssl_key_location,
        "ssl.key.password": _secret(kafka.ssl_key_password),
    }
    return {k: str(v) if isinstance(v, Path) else v for k, v in conf.items() if v is not None}


def librdkafka_consumer(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka consumer settings: the client's, and how long a fetch may wait for data.

    A short wait matters on brokers that answer a waiting fetch only when it times out
    (Tansu: one hop measured at p50 139 ms with librdkafka's default 500 ms, 32 ms at 10 ms).
    """
    return librdkafka(kafka) | {"fetch.wait.max.ms": kafka.fetch_max_wait_ms}


def _jaas_quoted(value: str) -> str:
    """A JAAS option value: Kafka's parser reads backslash escapes inside double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def jaas_config(mechanism: str, username: str, password: str) -> str:
    return (
        f"{_LOGIN_MODULE[mechanism]} required "
        f"username={_jaas_quoted(username)} password={_jaas_quoted(password)};"
    )


def _pem(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise SettingsError(f"cannot read the Kafka {what} {path}: {error.strerror}") from None


def java_keystore(kafka: KafkaSettings, directory: Path) -> Path | None:
    """The Java clients' PEM key store: ``ssl_keystore_location`` if set, else the client key
    and certificate chain written together, owner-only, into ``directory``; None without a
    client certificate."""
    if kafka.ssl_keystore_location is not None:
        return kafka.ssl_keystore_location
    certificate, key = kafka.ssl_certificate_location, kafka.ssl_key_location
    if certificate is None and key is None:
        return None
    if certificate is None or key is None:
        raise SettingsError(
            "a Kafka client certificate needs both FRAUDSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION "
            "and FRAUDSTREAM_KAFKA_SSL_KEY_LOCATION"
        )
    combined = _pem(key, "client key") + "\n" + _pem(certificate, "client certificate")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / KEYSTORE_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(combined)
    return path.resolve()


def java_properties(kafka: KafkaSettings, keystore: Path | None = None) -> dict[str, str]:
    """The Java client's properties (the Flink job's source and sink); ``keystore``: what
    :func:`java_keystore` gave, needed with a client certificate.

    The client key must be PKCS#8 PEM (``BEGIN PRIVATE KEY``), the form the Java client reads;
    it cannot read a PBES2-encrypted one (what openssl and cryptography write: "PBES2
    SecretKeyFactory not available"), so give the job an unencrypted key file (a 0600 file or
    a mounted Secret). librdkafka and aiokafka read encrypted keys as well.
    """
    props = {
        "bootstrap.servers": kafka.servers(),
        "security.protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        props["sasl.mechanism"] = kafka.sasl_mechanism
        props["sasl.jaas.config"] = jaas_config(
            kafka.sasl_mechanism, kafka.sasl_username or "", _secret(kafka.sasl_password) or ""
        )
    if kafka.ssl_ca_location:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = str(kafka.ssl_ca_location)
    client_certificate = kafka.ssl_certificate_location or kafka.ssl_key_location
    if client_certificate or kafka.ssl_keystore_location:
        if keystore is None:
            raise SettingsError("a Kafka client certificate for the Java clients needs its key "
                                "store file (java_keystore)")  # fmt: skip
        props["ssl.keystore.type"] = "PEM"
        props["ssl.keystore.location"] = str(keystore)
    if kafka.ssl_key_password:
        props["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return props


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A verifying TLS context with the configured CA and client certificate."""
    ca = kafka.ssl_ca_location
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if kafka.ssl_certificate_location:
        context.load_cert_chain(
            kafka.ssl_certificate_location,
            kafka.ssl_key_location,
            _secret(kafka.ssl_key_password),
        )
    return context


def aiokafka(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka's client keyword arguments for the configured brokers and security."""
    protocol = kafka.security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.servers().split(","),
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(kafka)
    if protocol.startswith("SASL"):
        options |= {
            "sasl_mechanism": kafka.sasl_mechanism or "PLAIN",
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": _secret(kafka.sasl_password),
        }
    return options
