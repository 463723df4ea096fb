"""Settings: grouped by concern, read from FRAUDSTREAM_* variables, overrides, provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.core.settings import (
    GROUPS,
    Settings,
    SettingsError,
    env_var,
    load_settings,
    resolve,
    scrub_secrets_from_environment,
)


def test_environment_is_read_and_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_ALERTS", "alerts.v2")
    monkeypatch.setenv("FRAUDSTREAM_STATE_DIR", "/nonexistent")
    settings = load_settings(redis_url="redis://127.0.0.1:1/0")
    assert settings.kafka.bootstrap_servers == "a:1,b:2"
    assert settings.topic.alerts == "alerts.v2"
    assert settings.redis.url == "redis://127.0.0.1:1/0"
    assert settings.state_dir == Path("/nonexistent")
    assert load_settings(kafka_bootstrap_servers="c:3").kafka.bootstrap_servers == "c:3"


def test_every_setting_round_trips_to_a_child_and_no_secret_is_in_its_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A child process given ``to_environment()`` reads back exactly these settings; its
    secrets come from owner-only files, never from its environment (on cdc8e54 they were in
    it, and from there in every process it started and in PyFlink's worker log)."""
    changed = Settings.of(
        kafka_bootstrap_servers="k:1", kafka_sasl_password="p'w", redis_url="redis://r:2/0",
        scoring_workers=3, topic_dlq="dlq.v2", model_registry=Path("reg"), job_bundle_rows=7,
        feedback_metrics_port=1, lake_flush_s=2.5, stack_partitions=9, stack_endpoints=False,
        token_key="ab" * 32, state_dir=tmp_path,
    )  # fmt: skip
    env = changed.to_environment()
    assert not any(secret in value for value in env.values() for secret in ("p'w", "ab" * 32))
    secrets = Path(env["FRAUDSTREAM_SECRETS_DIR"])
    assert (secrets.stat().st_mode & 0o777, (secrets / "token_key").stat().st_mode & 0o777) == (
        0o700, 0o600)  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == changed.updated({"secrets_dir": secrets})
    flat = dict(changed.flat())
    assert set(flat) == {f"{g}_{f}" for g, m in GROUPS.items() for f in m.model_fields} | {
        "state_dir",
        "secrets_dir",
    }


def test_secrets_are_masked_in_urls_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On cdc8e54 ``fraudstream config`` printed the password inside ``redis_url``, and the
    URL went into every child's environment."""
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("FRAUDSTREAM_REDIS_URL", "rediss://ops:hunter3@redis.internal:6380/0")
    settings = Settings().updated({"state_dir": tmp_path})
    masked = settings.masked()
    assert masked["kafka_sasl_password"] == "**********"
    assert masked["redis_url"] == "rediss://ops@redis.internal:6380/0"
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "hunter3"
    assert "hunter" not in repr(settings) + str(masked) + str(settings.to_environment())
    scrub_secrets_from_environment()
    assert not {"FRAUDSTREAM_KAFKA_SASL_PASSWORD", "FRAUDSTREAM_REDIS_URL"} & set(os.environ)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kafka_bootstrap_servers", "no-port"),
        ("kafka_security_protocol", "TLS"),
        ("kafka_sasl_mechanism", "GSSAPI"),
        ("redis_url", "http://127.0.0.1:6379"),
        ("stack_partitions", 0),
        ("job_flink_metrics_push_url", "file:///etc/passwd"),
        ("job_replay_horizon_s", -1),
    ],
)
def test_bad_values_name_the_setting(field: str, value: object) -> None:
    group, _, name = field.partition("_")
    with pytest.raises(ValidationError, match=f"{group}.{name}"):
        Settings.of(**{field: value})


def test_renamed_variables_are_refused_by_their_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_BROKER_PORT", "9092")
    with pytest.raises(SettingsError, match="FRAUDSTREAM_STACK_BROKER_PORT"):
        load_settings()


def test_missing_kafka_says_how_to_get_one() -> None:
    with pytest.raises(SettingsError, match="stack up"):
        Settings().kafka.servers()


def _write_stack(state_dir: Path) -> None:
    state_dir.mkdir()
    endpoints = {"bootstrap_servers": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:2/0",
                 "scoring_url": "http://127.0.0.1:3", "pushgateway_url": "http://127.0.0.1:4",
                 "broker_port": 1}  # fmt: skip
    (state_dir / "stack.json").write_text(json.dumps(endpoints))


def test_stack_endpoints_fill_only_what_is_unset_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_stack(tmp_path / "st")
    monkeypatch.setenv("FRAUDSTREAM_REDIS_URL", "redis://10.0.0.9:6379/0")
    resolved = resolve(state_dir=tmp_path / "st")
    assert resolved.settings.kafka.bootstrap_servers == "127.0.0.1:1"
    assert resolved.settings.redis.url == "redis://10.0.0.9:6379/0"
    assert resolved.sources["kafka_bootstrap_servers"].startswith("stack (")
    assert resolved.sources["redis_url"] == "environment"
    assert resolved.sources["state_dir"] == "flag"
    assert resolved.sources["job_parallelism"] == "default"
    assert resolved.settings.job.flink_metrics_push_url == "http://127.0.0.1:4"


def test_stack_endpoints_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_stack(tmp_path / "st")
    monkeypatch.setenv(env_var("stack_endpoints"), "false")
    settings = load_settings(state_dir=tmp_path / "st")
    assert settings.kafka.bootstrap_servers is None  # the negative control of the test above


def test_a_tansu_stack_makes_the_job_at_least_once_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Tansu's read_committed readers stall behind a transactional sink (16,024 of 60,000
    decisions visible, for good, in a run with exactly-once on it)."""
    stack = {"bootstrap_servers": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:2/0"}
    for broker, expected in (("tansu", "at-least-once"), ("kafka", "exactly-once")):
        (tmp_path / "stack.json").write_text(json.dumps(stack | {"broker": broker}))
        assert load_settings(state_dir=tmp_path).job.delivery == expected
    (tmp_path / "stack.json").write_text(json.dumps(stack | {"broker": "tansu"}))
    monkeypatch.setenv("FRAUDSTREAM_JOB_DELIVERY", "exactly-once")
    assert load_settings(state_dir=tmp_path).job.delivery == "exactly-once"  # told


def test_a_shadow_period_longer_than_its_maximum_is_refused() -> None:
    from services.core.settings import RetrainSettings

    with pytest.raises(ValueError, match="max_shadow_days is less than shadow_days"):
        RetrainSettings(shadow_days=7, max_shadow_days=5)
    assert RetrainSettings(shadow_days=2.3, max_shadow_days=2.3).max_shadow_days == 2.3
