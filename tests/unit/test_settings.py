"""Settings: environment variables, overrides, masking, validation, Kafka security mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.kafka import client_config
from services.settings import Settings, SettingsError, load_settings


def test_environment_is_read_and_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_ALERTS", "alerts.v2")
    settings = load_settings(redis_url="redis://127.0.0.1:1/0", state_dir=Path("/nonexistent"))
    assert settings.kafka_bootstrap_servers == "a:1,b:2"
    assert settings.topic_alerts == "alerts.v2"
    assert load_settings(kafka_bootstrap_servers="c:3").kafka_bootstrap_servers == "c:3"


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_PASSWORD", "hunter2")
    masked = Settings().masked()
    assert masked["kafka_sasl_password"] == "**********"
    assert "hunter2" not in repr(Settings())
    assert "hunter2" not in str(masked)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kafka_bootstrap_servers", "no-port"),
        ("kafka_security_protocol", "TLS"),
        ("kafka_sasl_mechanism", "GSSAPI"),
        ("redis_url", "http://127.0.0.1:6379"),
        ("transactions_partitions", 0),
    ],
)
def test_bad_values_name_the_setting(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_missing_kafka_says_how_to_get_one() -> None:
    with pytest.raises(SettingsError, match="stack up"):
        Settings().require_kafka()


def test_sasl_ssl_maps_onto_librdkafka() -> None:
    settings = Settings(
        kafka_bootstrap_servers="broker:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cret",
        kafka_ssl_ca_location=Path("ca.pem"),
    )
    conf = client_config(settings)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "svc"
    assert conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == "ca.pem"
    assert "ssl.key.location" not in conf
