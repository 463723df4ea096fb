"""The one typed settings object: environment variables ``FRAUDSTREAM_*``, overridable by CLI flags.

Kafka and Redis endpoints left unset fall back to the embedded stack's state file, so after
``fraudstream stack up`` every other command finds the local broker and Redis by itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services import stack_state
from services.errors import UserError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
ENV_PREFIX = "FRAUDSTREAM_"


class Settings(BaseSettings):
    """Everything a component needs to find its peers; secrets are masked when printed."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    kafka_bootstrap_servers: str | None = Field(
        None,
        description="Kafka bootstrap servers, host:port[,host:port]; unset: the embedded stack",
    )
    kafka_security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security")
    kafka_sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism")
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ssl_ca_location: Path | None = Field(None, description="CA certificate file (PEM)")
    kafka_ssl_certificate_location: Path | None = Field(None, description="Client certificate")
    kafka_ssl_key_location: Path | None = Field(None, description="Client private key (PEM)")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Client key password")
    kafka_fetch_max_wait_ms: int = Field(
        10, ge=0, le=60_000,
        description="Longest a consumer's fetch waits at the broker when no data is there",
    )  # fmt: skip

    redis_url: str | None = Field(None, description="Redis URL; unset: the embedded stack")
    redis_password: SecretStr | None = Field(
        None, description="Redis password, kept out of the URL"
    )

    scoring_url: str | None = Field(
        None, description="Scoring service URL; unset: the embedded stack"
    )
    scoring_token: SecretStr | None = Field(
        None, description="Bearer token the scoring service requires (unset: no auth)"
    )
    scoring_host: str = Field("127.0.0.1", description="Address the scoring service listens on")
    scoring_port: int = Field(0, ge=0, le=65535, description="Scoring port; 0: a free one")
    scoring_workers: int = Field(1, ge=1, le=64, description="Scoring server processes")
    scoring_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads per request")
    scoring_shadow_version: str | None = Field(
        None, description="A model version scored alongside, reported, never acted on"
    )
    scoring_max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest scoring request body (413 above)"
    )
    scoring_reload_interval_s: float = Field(
        1.0, gt=0, description="How often the service checks the registry for a new model"
    )

    topic_transactions: str = Field("transactions", description="Incoming transactions")
    topic_dlq: str = Field("transactions.dlq", description="Invalid transactions, with a reason")
    topic_decisions: str = Field("decisions", description="One decision per transaction")
    topic_alerts: str = Field("alerts", description="Review and decline decisions")
    topic_feedback: str = Field("alert-feedback", description="Analyst dispositions")
    topic_feedback_dlq: str = Field(
        "alert-feedback.dlq", description="Invalid dispositions, with a reason"
    )
    transactions_partitions: int = Field(4, ge=1, le=1024, description="Partitions of transactions")

    model_registry: Path | None = Field(
        None, description="Model registry directory; unset: the registry shipped in models/"
    )

    job_parallelism: int = Field(
        2, ge=1, le=256, description="Stream job parallelism (a Python worker process each)"
    )
    job_checkpoint_interval_ms: int = Field(
        1000, ge=100, description="Stream job checkpoint interval (commits source offsets)"
    )
    job_bundle_ms: int = Field(
        10, ge=1, le=60_000, description="Longest a micro-batch waits before it is processed"
    )
    job_bundle_rows: int = Field(500, ge=1, le=100_000, description="Largest micro-batch")
    job_out_of_orderness_ms: int = Field(
        5000, ge=0, description="Event-time watermark delay (bounded out-of-orderness)"
    )
    job_group_id: str = Field("fraudstream-job", description="The job's Kafka consumer group")
    job_metrics_port: int = Field(
        9250, ge=0, le=65535, description="First Prometheus port of the job's Python workers"
    )
    job_scoring_deadline_ms: int = Field(
        200, ge=1, description="Deadline of one scoring call before the rules-only fallback"
    )
    feedback_blocklist_ttl_ms: int = Field(
        30 * 24 * 3600 * 1000, ge=1000, description="How long a confirmed fraud blocks its card"
    )
    feedback_metrics_port: int = Field(
        9260, ge=0, le=65535, description="Prometheus port of the feedback app (0: none)"
    )
    lake_dir: Path | None = Field(
        None, description="The data lake (Parquet tables); unset: lake/ in the state directory"
    )
    lake_flush_s: float = Field(
        5.0, gt=0, description="How long the raw archive gathers rows before writing a file"
    )
    broker_port: int = Field(0, ge=0, le=65535, description="Embedded broker port; 0: a free one")
    redis_port: int = Field(0, ge=0, le=65535, description="Embedded Redis port; 0: a free one")
    state_dir: Path = Field(Path(".fraudstream"), description="Embedded stack state and logs")

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if not _HOST_PORT.match(s)]
        if not servers or bad:
            raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected redis://, rediss:// or unix:// URL, got {value!r}")
        return value

    @property
    def lake(self) -> Path:
        return self.lake_dir or self.state_dir / "lake"

    @property
    def topics(self) -> list[str]:
        """Every topic the pipeline uses, in event-path order."""
        return [
            self.topic_transactions,
            self.topic_dlq,
            self.topic_decisions,
            self.topic_alerts,
            self.topic_feedback,
            self.topic_feedback_dlq,
        ]

    def require_kafka(self) -> str:
        """The bootstrap servers, or an error that says how to get some."""
        if self.kafka_bootstrap_servers is None:
            raise SettingsError(
                "no Kafka broker: run `fraudstream stack up` or set "
                "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS / --bootstrap-servers"
            )
        return self.kafka_bootstrap_servers

    def require_redis(self) -> str:
        """The Redis URL, or an error that says how to get one."""
        if self.redis_url is None:
            raise SettingsError(
                "no Redis: run `fraudstream stack up` or set FRAUDSTREAM_REDIS_URL / --redis-url"
            )
        return self.redis_url

    def redis_client(self, **options: Any) -> redis.Redis:
        """A client of the configured Redis, with its password (``options``: timeouts)."""
        password = self.redis_password.get_secret_value() if self.redis_password else None
        return redis.Redis.from_url(self.require_redis(), password=password, **options)

    def require_scoring(self) -> str:
        """The scoring service URL, or an error that says how to get one."""
        if self.scoring_url is None:
            raise SettingsError(
                "no scoring service: run `fraudstream stack up` or set FRAUDSTREAM_SCORING_URL"
            )
        return self.scoring_url

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets replaced by asterisks."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "**********"
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


class SettingsError(UserError, ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, then CLI overrides (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = Settings(**given)
    if settings.kafka_bootstrap_servers and settings.redis_url and settings.scoring_url:
        return settings
    state = stack_state.read(settings.state_dir)
    if state is None:
        return settings
    fill = {
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers or state.bootstrap_servers,
        "redis_url": settings.redis_url or state.redis_url,
        "scoring_url": settings.scoring_url or state.scoring_url,
    }
    return settings.model_copy(update=fill)
