"""One Kafka configuration, three renderings: every setting reaches librdkafka, the Flink job's
Java properties (escaped JAAS, inline PEM) and aiokafka/faust."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
import trustme

from services.core.kafka_config import (
    CLIENT_LOG,
    aiokafka,
    jaas_config,
    java_keystore,
    java_properties,
    librdkafka,
)
from services.core.settings import KafkaSettings, Settings, SettingsError
from stream_jobs import job
from stream_jobs.feedback.app import credentials

PASSWORD = "pa\"ss\\wo'rd"  # a quote of each kind and a backslash


@pytest.fixture
def mtls(tmp_path: Path) -> KafkaSettings:
    """Every Kafka setting set, with real PEM files (a CA and a client certificate)."""
    ca = trustme.CA()
    client = ca.issue_cert("fraudstream-client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    return KafkaSettings(
        bootstrap_servers="b1:9093,b2:9093", security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512", sasl_username="svc'user", sasl_password=PASSWORD,
        ssl_ca_location=tmp_path / "ca.pem", ssl_certificate_location=tmp_path / "client.pem",
        ssl_key_location=tmp_path / "client.key", ssl_key_password="keypw", fetch_max_wait_ms=10,
    )  # fmt: skip


def test_every_setting_reaches_librdkafka(mtls: KafkaSettings) -> None:
    conf = librdkafka(mtls)
    assert conf == {
        "bootstrap.servers": "b1:9093,b2:9093", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc'user", "sasl.password": PASSWORD,
        "ssl.ca.location": str(mtls.ssl_ca_location),
        "ssl.certificate.location": str(mtls.ssl_certificate_location),
        "ssl.key.location": str(mtls.ssl_key_location), "ssl.key.password": "keypw",
        "logger": CLIENT_LOG,  # its own log lines: silent unless kafka_client_log
    }  # fmt: skip


def test_every_setting_reaches_the_java_clients(mtls: KafkaSettings, tmp_path: Path) -> None:
    keystore = java_keystore(mtls, tmp_path / "secrets")
    assert keystore is not None
    props = java_properties(mtls, keystore)
    assert props["bootstrap.servers"] == "b1:9093,b2:9093"
    assert props["security.protocol"] == "SASL_SSL"
    assert props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="svc\'user" password="pa\\"ss\\\\wo\'rd";'
    )
    assert props["ssl.truststore.location"] == str(mtls.ssl_ca_location)
    assert props["ssl.keystore.location"] == str(keystore)
    stored = keystore.read_text()
    assert "PRIVATE KEY-----" in stored
    assert "BEGIN CERTIFICATE-----" in stored
    assert keystore.stat().st_mode & 0o777 == 0o600
    assert props["ssl.key.password"] == "keypw"


def test_the_client_key_never_travels_in_the_jobs_sql(mtls: KafkaSettings, tmp_path: Path) -> None:
    """On cdc8e54 the private key was inlined in the DDL, which a submitted job carries."""
    settings = Settings.of(state_dir=tmp_path).model_copy(update={"kafka": mtls})
    ddl = job.source_ddl(settings) + job.sink_ddl(settings)
    assert "PRIVATE KEY" not in ddl
    assert "ssl.keystore.location" in ddl


def test_every_setting_reaches_aiokafka_and_faust(mtls: KafkaSettings) -> None:
    options = aiokafka(mtls)
    assert options["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "svc'user",
        PASSWORD,
    )
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["ssl_context"].get_ca_certs()  # the configured CA, loaded
    creds = credentials(mtls)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("svc'user", PASSWORD)
    assert creds.protocol.value == "SASL_SSL"


def test_plaintext_renders_no_security(tmp_path: Path) -> None:
    plain = KafkaSettings(bootstrap_servers="127.0.0.1:9092")
    assert librdkafka(plain) == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT",
        "logger": CLIENT_LOG,
    }  # fmt: skip
    assert set(java_properties(plain)) == {"bootstrap.servers", "security.protocol"}
    assert credentials(plain) is None


def test_sasl_without_tls_defaults_to_plain() -> None:
    creds = credentials(KafkaSettings(bootstrap_servers="h:1", security_protocol="SASL_PLAINTEXT",
                                      sasl_username="u", sasl_password="p"))  # fmt: skip
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_PLAINTEXT", "PLAIN")


def test_a_certificate_without_its_key_is_refused(mtls: KafkaSettings) -> None:
    with pytest.raises(SettingsError, match="SSL_KEY_LOCATION"):
        java_keystore(mtls.model_copy(update={"ssl_key_location": None}), Path("unused"))


def test_plain_jaas_uses_the_plain_login_module() -> None:
    assert jaas_config("PLAIN", "u", "p").startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
    )


def test_no_value_can_end_a_sql_option_early(mtls: KafkaSettings, tmp_path: Path) -> None:
    """The job's DDL quotes every option: a password with quotes stays inside its literal."""
    settings = Settings.of(state_dir=tmp_path).model_copy(update={"kafka": mtls})
    ddl = job.source_ddl(settings)
    assert "'properties.sasl.jaas.config' = " in ddl
    assert 'password="pa\\"ss\\\\wo\'\'rd"' in ddl  # the ' doubled, the JAAS escapes kept
    assert ddl.count("'") % 2 == 0


def test_a_cluster_job_with_a_client_certificate_needs_a_key_store_on_its_nodes(
    mtls: KafkaSettings, tmp_path: Path
) -> None:
    """The key store the job writes locally is not on a cluster's TaskManagers."""
    settings = Settings.of(state_dir=tmp_path).model_copy(update={"kafka": mtls})
    for where in ({"remote": ("127.0.0.1", 1)}, {"local": False}):
        with pytest.raises(SettingsError, match="KAFKA_SSL_KEYSTORE_LOCATION"):
            job.build(settings, **where)
