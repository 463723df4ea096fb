"""The one typed settings object, grouped by concern, read from ``FRAUDSTREAM_*`` variables.

A variable is ``FRAUDSTREAM_<GROUP>_<FIELD>`` (``FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS`` is
``settings.kafka.bootstrap_servers``), and the same flat name ``<group>_<field>`` is what CLI
flags override. Unset Kafka, Redis and scoring endpoints are filled from the state file that
``fraudstream stack up`` writes, unless ``FRAUDSTREAM_STACK_ENDPOINTS=false``;
``fraudstream config`` says where each value came from.

Secrets (every ``SecretStr``) can also come from files: ``FRAUDSTREAM_SECRETS_DIR`` names a
directory holding one file per secret, named by its flat name (``kafka_sasl_password``), as a
mounted Kubernetes Secret does. The project hands secrets to its own child processes that way,
never in their environment (:meth:`Settings.to_environment`), and masks them when printed,
credentials inside URLs included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis
import redis.asyncio
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.cluster import RedisCluster

from services.core.errors import UserError
from services.core.tokens import Tokenizer

RedisClient = redis.Redis | RedisCluster  # what ``RedisSettings.client`` returns
AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.RedisCluster  # ``async_client``
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
ENV_PREFIX = "FRAUDSTREAM_"
STACK_FILE = "stack.json"
# Tansu's read_committed readers stall behind a transactional sink (measured: 16,024 of 60,000
# decisions visible, for good), and it shows aborted records anyway: at-least-once there.
TANSU_DELIVERY: Final = "at-least-once"
TOKEN_KEY_FILE = "token.key"  # the embedded stack's token key, made by `stack up`
RENAMED = {  # variables of earlier releases: a clear error rather than silently ignored
    "FRAUDSTREAM_BROKER_PORT": "FRAUDSTREAM_STACK_BROKER_PORT",
    "FRAUDSTREAM_REDIS_PORT": "FRAUDSTREAM_STACK_REDIS_PORT",
    "FRAUDSTREAM_TRANSACTIONS_PARTITIONS": "FRAUDSTREAM_STACK_PARTITIONS",
    "FRAUDSTREAM_JOB_SCORING_DOWN": "FRAUDSTREAM_JOB_SCORING_DOWN_REVIEW_USD",
}


class SettingsError(UserError, ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """The one description of a Kafka connection; ``services.core.kafka_config`` renders it
    for librdkafka, for the Flink job's Java clients and for aiokafka (faust)."""

    bootstrap_servers: str | None = Field(
        None,
        description="Kafka bootstrap servers, host:port[,host:port]; unset: the embedded stack",
    )
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security")
    sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    ssl_ca_location: Path | None = Field(None, description="CA certificate file (PEM)")
    ssl_certificate_location: Path | None = Field(None, description="Client certificate (PEM)")
    ssl_key_location: Path | None = Field(None, description="Client private key (PEM)")
    ssl_key_password: SecretStr | None = Field(None, description="Client key password")
    ssl_keystore_location: Path | None = Field(
        None,
        description="The Flink job's Java clients: one PEM file with the client key and its "
        "certificate chain, present on every Flink node (a mounted Secret); unset: the job "
        "writes one, owner-only, in the state directory from the certificate and key files",
    )  # fmt: skip
    client_log: bool = Field(
        False,
        description="Show librdkafka's own log lines on stderr (debugging a connection); off: "
        "each command reports a failure in one line of its own",
    )  # fmt: skip
    fetch_max_wait_ms: int = Field(
        10, ge=0, le=60_000,
        description="Longest a consumer's fetch waits at the broker when no data is there",
    )  # fmt: skip

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if not _HOST_PORT.match(s)]
        if not servers or bad:
            raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return ",".join(servers)

    def servers(self) -> str:
        """The bootstrap servers, or an error that says how to get some."""
        if self.bootstrap_servers is None:
            raise SettingsError(
                "no Kafka broker: run `fraudstream stack up` or set "
                "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS / --bootstrap-servers"
            )
        return self.bootstrap_servers


class RedisSettings(_Group):
    url: str | None = Field(None, description="Redis URL; unset: the embedded stack")
    password: SecretStr | None = Field(None, description="Redis password, kept out of the URL")
    cluster: bool = Field(
        False, description="The URL names one node of a Redis Cluster (keys are hash-tagged)"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected redis://, rediss:// or unix:// URL, got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_the_url(cls, values: Any) -> Any:
        """A password written into the URL becomes the password setting: the URL is handed
        to child processes and printed, a secret never is."""
        if not isinstance(values, dict) or not isinstance(values.get("url"), str):
            return values
        parts = urlsplit(values["url"])
        if parts.password is None:
            return values
        user = f"{parts.username}@" if parts.username else ""
        host = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit(parts._replace(netloc=f"{user}{host}"))
        return values | {"url": url, "password": values.get("password") or parts.password}

    def require_url(self) -> str:
        """The Redis URL, or an error that says how to get one."""
        if self.url is None:
            raise SettingsError("no Redis: run `fraudstream stack up` or set FRAUDSTREAM_REDIS_URL")
        return self.url

    def client(self, **options: Any) -> RedisClient:
        """A client of the configured Redis or Redis Cluster, with its password
        (``options``: timeouts)."""
        password = self.password.get_secret_value() if self.password else None
        if self.cluster:
            return RedisCluster.from_url(self.require_url(), password=password, **options)
        return redis.Redis.from_url(self.require_url(), password=password, **options)

    def async_client(self, **options: Any) -> AsyncRedisClient:
        """An asyncio client of the same Redis (``options``: timeouts)."""
        password = self.password.get_secret_value() if self.password else None
        if self.cluster:
            return redis.asyncio.RedisCluster.from_url(
                self.require_url(), password=password, **options
            )
        return redis.asyncio.Redis.from_url(self.require_url(), password=password, **options)


class ScoringSettings(_Group):
    url: str | None = Field(None, description="Scoring service URL; unset: the embedded stack")
    token: SecretStr | None = Field(
        None, description="Bearer token the scoring service requires (unset: no auth)"
    )
    require_token: bool = Field(
        False,
        description="The scoring service refuses to start without a token (the chart sets it: "
        "an existing Secret lacking scoring_token must not leave the API open)",
    )  # fmt: skip
    host: str = Field("127.0.0.1", description="Address the scoring service listens on")
    port: int = Field(0, ge=0, le=65535, description="Scoring port; 0: a free one")
    workers: int = Field(1, ge=1, le=64, description="Scoring server processes")
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads per request")
    shadow_version: str | None = Field(
        None, description="A model version scored alongside, reported, never acted on"
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest scoring request body (413 above)"
    )
    reload_interval_s: float = Field(
        1.0, gt=0, description="How often the service checks the registry for a new model"
    )
    header_timeout_s: float = Field(
        5.0, gt=0, description="A client's request headers must arrive within this (else closed)"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="A request's body must arrive within this after its headers"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request head (431 above)"
    )
    max_in_flight: int = Field(
        64, ge=1, description="Score requests served at once; above: 503 with Retry-After"
    )
    body_budget_bytes: int | None = Field(
        None, ge=1024,
        description="Bytes of request bodies a worker holds at once (declared lengths); above: "
        "503 with Retry-After. Unset: a quarter of the container's memory limit shared by the "
        "workers (256 MiB without a limit)",
    )  # fmt: skip
    explain: Literal["flagged", "all", "none"] = Field(
        "flagged",
        description="Which rows get reason codes: those at or above review, every one, or none "
        "(the server's choice, never the client's)",
    )  # fmt: skip

    def require_url(self) -> str:
        """The scoring service URL, or an error that says how to get one."""
        if self.url is None:
            raise SettingsError(
                "no scoring service: run `fraudstream stack up` or set FRAUDSTREAM_SCORING_URL"
            )
        return self.url

    def bearer(self) -> str | None:
        return self.token.get_secret_value() if self.token else None


class TopicSettings(_Group):
    """The pipeline's topic names: the one place they are defined."""

    transactions: str = Field("transactions", description="Incoming transactions")
    dlq: str = Field("transactions.dlq", description="Invalid transactions, with a reason")
    decisions: str = Field("decisions", description="One decision per transaction")
    alerts: str = Field("alerts", description="Review and decline decisions")
    feedback: str = Field("alert-feedback", description="Analyst dispositions")
    feedback_dlq: str = Field(
        "alert-feedback.dlq", description="Invalid dispositions, with a reason"
    )
    labels: str = Field(
        "labels", description="Dispositions as applied, with their transaction (the lake's labels)"
    )
    strategy: str = Field(
        "strategy", description="Published strategy documents, one per version (compacted)"
    )
    chargebacks: str = Field(
        "chargebacks", description="Chargebacks from an issuer's systems: fraud labels for any "
        "transaction (the feedback app forwards each to the dispositions)",
    )  # fmt: skip

    def all(self) -> list[str]:
        """Every topic the pipeline uses, in event-path order."""
        return [self.transactions, self.dlq, self.decisions, self.alerts, self.feedback,
                self.feedback_dlq, self.labels, self.strategy, self.chargebacks]  # fmt: skip


class TokenSettings(_Group):
    """The key of the identifier tokens (``services.core.tokens``)."""

    key: SecretStr | None = Field(
        None, description="Secret key of the identifier tokens (hex, 32+ bytes); unset: the "
        "embedded stack's token.key",
    )  # fmt: skip
    key_id: str = Field("k1", description="Names the key inside each token (rotation)")

    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the configured key, or an error that says how to get one."""
        if self.key is None:
            raise SettingsError(
                "no token key: set FRAUDSTREAM_TOKEN_KEY (a secret, hex) or run "
                "`fraudstream stack up`, which makes one in the state directory"
            )
        try:
            return Tokenizer(bytes.fromhex(self.key.get_secret_value()), self.key_id)
        except ValueError as error:
            raise SettingsError(f"FRAUDSTREAM_TOKEN_KEY: {error}") from None


class DeadLetterSettings(_Group):
    raw_bytes: int = Field(
        4096, ge=0, le=256 * 1024,
        description="Raw bytes a dead letter keeps (its size and SHA-256 describe the rest)",
    )  # fmt: skip


class ModelSettings(_Group):
    registry: Path | None = Field(
        None, description="Model registry directory; unset: registry/ in the state directory"
    )
    signals: Path | None = Field(
        None,
        description="Signals file: the attributes transactions may carry and the entities whose"
        " features the job computes (docs/contract.md, 'Bring your own signals'); unset: none",
    )


class JobSettings(_Group):
    parallelism: int = Field(
        2, ge=1, le=256, description="Stream job parallelism (a Python worker process each)"
    )
    checkpoint_interval_ms: int = Field(
        1000, ge=100, description="Stream job checkpoint interval (commits source offsets)"
    )
    bundle_ms: int = Field(
        10, ge=1, le=60_000, description="Longest a micro-batch waits before it is processed"
    )
    bundle_rows: int = Field(500, ge=1, le=100_000, description="Largest micro-batch")
    out_of_orderness_ms: int = Field(
        5000, ge=0, description="Event-time watermark delay (bounded out-of-orderness)"
    )
    group_id: str = Field("fraudstream-job", description="The job's Kafka consumer group")
    delivery: Literal["exactly-once", "at-least-once"] = Field(
        "exactly-once",
        description="Decisions, alerts and dead letters written in Kafka transactions committed "
        "at each checkpoint (read_committed readers see each once, a checkpoint interval later; "
        "Apache Kafka only), or at once with a repeat after a restart (the embedded Tansu "
        "stack's default: its read_committed readers stall behind transactions)",
    )  # fmt: skip
    from_beginning: bool = Field(
        False,
        description="Where a consumer group without committed offsets (new, or expired while "
        "the job was stopped) starts: the oldest retained transaction; false: the newest",
    )  # fmt: skip
    metrics_host: str = Field(
        "127.0.0.1", description="Address the job's metrics endpoints bind (0.0.0.0 in a pod)"
    )
    flink_metrics_push_url: str | None = Field(
        None, pattern=r"^https?://[^\s/]+$",
        description="A Prometheus Pushgateway the local job pushes Flink's own metrics to "
        "(checkpoints, restarts, backpressure); unset: none (a cluster's Flink serves them)",
    )  # fmt: skip
    metrics_port: int = Field(
        9300, ge=0, le=65535,
        description="First Prometheus port of the job's Python workers (one each, 16 at most; "
        "clear of Flink's reporter at 9249-9250)",
    )  # fmt: skip
    scoring_deadline_ms: int = Field(
        200, ge=1, description="Deadline of one scoring call before the rules-only fallback"
    )
    restart_attempts: int = Field(
        3, ge=0, le=100,
        description="Job failures tolerated per restart interval before it fails for good",
    )  # fmt: skip
    restart_interval_s: int = Field(
        300, ge=1, description="The window over which job failures are counted"
    )
    restart_delay_s: int = Field(10, ge=0, description="Pause before a failed job restarts")
    redis_down_review_usd: float = Field(
        0.0, ge=0,
        description="Failure policy, Redis unavailable (no history, no blocklists): decisions "
        "from this amount (USD) up are at least review; 0: every one (fail closed)",
    )  # fmt: skip
    scoring_down_review_usd: float = Field(
        0.0, ge=0,
        description="Failure policy, scoring unavailable or refusing (rules only): decisions "
        "from this amount (USD) up are at least review; 0: every one (fail closed)",
    )  # fmt: skip
    review_sample_rate: float = Field(
        0.0, ge=0, le=0.05,
        description="Share of approved transactions also sent to analysts at random (a hash of "
        "the transaction id: a replay samples the same ones), each decision logging its "
        "probability of review for inverse-propensity evaluation; 0: none",
    )  # fmt: skip
    unrecorded_max: int = Field(
        50_000, ge=0,
        description="Events decided without Redis that a worker holds to record in their "
        "cards' histories once Redis is back (beyond: counted as dropped)",
    )  # fmt: skip
    max_event_ahead_s: int = Field(
        600, ge=0,
        description="An event dated further than this ahead of the job's clock is a dead letter "
        "(event_time_future)",
    )  # fmt: skip
    merchant_cache_s: float = Field(
        60.0, ge=0,
        description="How long a worker reuses the merchant windows it read (they end a week ago)",
    )  # fmt: skip
    replay_horizon_s: float = Field(
        300.0, ge=0,
        description="How long Redis keeps the features each transaction was decided with, so "
        "that a replay after a crash is decided identically: longer than a restart takes",
    )  # fmt: skip
    rest_port: int = Field(
        0, ge=0, le=65535,
        description="Local mode: the loopback port of Flink's REST API (job state, restarts); 0: "
        "none chosen",
    )  # fmt: skip


class FeedbackSettings(_Group):
    blocklist_ttl_ms: int = Field(
        30 * 24 * 3600 * 1000, ge=1000, description="How long a confirmed fraud blocks its card"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the feedback app's metrics endpoint binds"
    )
    metrics_port: int = Field(
        9320, ge=0, le=65535, description="Prometheus port of the feedback app (0: none)"
    )
    session_timeout_s: float = Field(
        6.0, ge=1.0, le=300.0,
        description="The app's consumer-group session timeout: how soon a dead worker's "
        "partitions move (6 s is Kafka's default minimum)",
    )  # fmt: skip
    alert_ttl_days: float = Field(
        30.0, gt=0,
        description="How long an alert's context (what a disposition needs: card, device, "
        "merchant, time, decision) is kept in Redis",
    )  # fmt: skip
    park_s: float = Field(
        86_400.0, gt=0,
        description="How long a disposition whose transaction is not known yet (its alert not "
        "remembered, nor the transaction in the lake) waits before it is a dead letter",
    )  # fmt: skip
    lookup_days: int = Field(
        7, ge=1, le=400,
        description="A disposition of a transaction never alerted, without its event_time: how "
        "many days of the lake are searched for the transaction",
    )  # fmt: skip
    redis_timeout_s: float = Field(
        2.0, gt=0, description="Timeout of every Redis call of the feedback app"
    )
    stuck_s: float = Field(
        30.0, gt=0,
        description="An agent retrying one message this long (Redis down) makes the app not "
        "ready, its /readyz naming the message and the error",
    )  # fmt: skip


class LakeSettings(_Group):
    dir: Path | None = Field(
        None, description="The data lake (Parquet tables); unset: lake/ in the state directory"
    )
    flush_s: float = Field(
        5.0, gt=0, description="How long the raw archive gathers rows before writing a file"
    )
    label_maturity_days: float = Field(
        60.0, ge=0, le=3650,
        description="When a day's labels count as complete: an unlabelled transaction older "
        "than this is legit to backtests, model comparisons and retraining",
    )  # fmt: skip


class RetrainSettings(_Group):
    """``fraudstream retrain``: what a run trains on and how its candidate is judged."""

    window_days: float = Field(
        90.0, gt=0, le=3650, description="Days of the lake a candidate trains on, ending where "
        "labels mature (FRAUDSTREAM_LAKE_LABEL_MATURITY_DAYS before the run)",
    )  # fmt: skip
    every_days: float = Field(
        7.0, ge=0, le=365, description="A new run starts this long after the last one started "
        "at the earliest (a daily CronJob then trains once a week)",
    )  # fmt: skip
    shadow_days: float = Field(
        7.0, ge=0, le=365, description="Days of the shadow's decisions a candidate is judged "
        "on at the least, once their labels have matured",
    )  # fmt: skip
    max_shadow_days: float = Field(
        28.0, ge=0, le=365, description="Days of the shadow's decisions at the most: with fewer "
        "than min_fraud fraud labels among them, the run ends undecided",
    )  # fmt: skip
    min_fraud: int = Field(
        30, ge=1, le=1_000_000, description="Fraud labels among the shadow's decisions needed "
        "to judge it",
    )  # fmt: skip
    tolerance: float = Field(
        0.01, ge=0, le=1, description="How much PR-AUC a candidate may lose (at the low end of "
        "its 95 % interval) and still be promoted",
    )  # fmt: skip

    @model_validator(mode="after")
    def _shadow_period(self) -> Self:
        if self.max_shadow_days < self.shadow_days:
            raise ValueError("max_shadow_days is less than shadow_days: no run could be judged")
        return self


class StackSettings(_Group):
    """Knobs of the embedded local stack only (none of them is a Helm value)."""

    broker: Literal["tansu", "kafka"] = Field(
        "tansu", description="The local broker: Tansu (in memory, no Java) or Apache Kafka"
    )
    kafka_cache: Path | None = Field(
        None, description="Where Apache Kafka's jars are kept; unset: the user's cache directory"
    )
    broker_port: int = Field(0, ge=0, le=65535, description="Embedded broker port; 0: a free one")
    redis_port: int = Field(0, ge=0, le=65535, description="Embedded Redis port; 0: a free one")
    redis_cluster: bool = Field(
        False, description="Start a 3-master Redis Cluster instead of one Redis"
    )
    partitions: int = Field(
        4, ge=1, le=1024, description="Partitions of the keyed topics the stack creates"
    )
    endpoints: bool = Field(
        True, description="Fill unset Kafka/Redis/scoring endpoints from `stack up`'s state file"
    )
    monitoring: bool = Field(
        False, description="Also start a Prometheus server scraping the stack, rules loaded"
    )
    prometheus: Path | None = Field(
        None, description="The Prometheus server binary; unset: `prometheus` on PATH"
    )
    prometheus_port: int = Field(
        0, ge=0, le=65535, description="The local Prometheus port; 0: a free one"
    )
    workbench_port: int = Field(
        0, ge=0, le=65535, description="The local workbench's port; 0: a free one"
    )
    pushgateway: Path | None = Field(
        None,
        description="The Prometheus Pushgateway binary (the local job pushes Flink's own metrics "
        "there); unset: `prometheus-pushgateway` on PATH",
    )


class WorkbenchSettings(_Group):
    database_url: SecretStr | None = Field(
        None,
        description="The case store: a SQLAlchemy URL (postgresql+psycopg://user@host/db for a "
        "team; it may hold a password); unset: SQLite at workbench.db in the state directory",
    )  # fmt: skip
    host: str = Field("127.0.0.1", description="Address the workbench's web page binds")
    port: int = Field(8090, ge=0, le=65535, description="Port of the workbench's web page")
    session_minutes: int = Field(
        480, ge=5, le=1440, description="A sign-in lasts this long, then the analyst signs in again"
    )
    secure_cookies: bool = Field(
        False,
        description="Send the session cookie over HTTPS only (true behind a TLS Ingress; "
        "browsers treat http://localhost as secure too)",
    )
    session_key: SecretStr | None = Field(
        None,
        description="Signs the sessions' cookies (hex, 32 bytes or more; the same on every "
        "replica); unset: a new one at each start, which signs everyone out",
    )  # fmt: skip


GROUPS: dict[str, type[_Group]] = {
    "kafka": KafkaSettings, "redis": RedisSettings, "scoring": ScoringSettings,
    "topic": TopicSettings, "token": TokenSettings, "dlq": DeadLetterSettings,
    "model": ModelSettings, "job": JobSettings, "feedback": FeedbackSettings,
    "lake": LakeSettings, "retrain": RetrainSettings, "stack": StackSettings,
    "workbench": WorkbenchSettings,
}  # fmt: skip


class Settings(BaseSettings):
    """Everything a component needs to find its peers; secrets are masked when printed."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="_", env_nested_max_split=1,
        frozen=True, extra="forbid",
    )  # fmt: skip

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    scoring: ScoringSettings = ScoringSettings()
    topic: TopicSettings = TopicSettings()
    token: TokenSettings = TokenSettings()
    dlq: DeadLetterSettings = DeadLetterSettings()
    model: ModelSettings = ModelSettings()
    job: JobSettings = JobSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    lake: LakeSettings = LakeSettings()
    retrain: RetrainSettings = RetrainSettings()
    stack: StackSettings = StackSettings()
    workbench: WorkbenchSettings = WorkbenchSettings()
    state_dir: Path = Field(Path(".fraudstream"), description="Embedded stack state and logs")
    secrets_dir: Path | None = Field(
        None,
        description="A directory with one file per secret, named by setting (kafka_sasl_password, "
        "kafka_ssl_key_password, redis_password, scoring_token, token_key): read for secrets not "
        "set otherwise (a mounted Secret)",
    )  # fmt: skip

    @classmethod
    def of(cls, **flat: Any) -> Settings:
        """Settings from flat names (``kafka_bootstrap_servers=...``) over the environment."""
        return cls(**nest(flat))

    @property
    def lake_path(self) -> Path:
        return self.lake.dir or self.state_dir / "lake"

    def flat(self) -> Iterator[tuple[str, Any]]:
        """Every setting as (``<group>_<field>``, value): the names of flags and variables."""
        for group in GROUPS:
            for field, value in getattr(self, group):
                yield f"{group}_{field}", value
        yield "state_dir", self.state_dir
        yield "secrets_dir", self.secrets_dir

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with ``changes`` (flat names) applied and validated; the environment unread."""
        nested = nest(changes)
        update: dict[str, Any] = {}
        for name, value in nested.items():
            if name in GROUPS:
                group = getattr(self, name)
                update[name] = type(group).model_validate(dict(group) | value)
            else:
                update[name] = value
        return self.model_copy(update=update)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, refusing flat names it would silently add (use :meth:`updated`)."""
        unknown = set(update or ()) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"not Settings fields: {sorted(unknown)}; use Settings.updated()")
        return super().model_copy(update=update, deep=deep)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets replaced by asterisks (a password
        inside a URL too)."""
        return {name: _masked(value) for name, value in self.flat()}

    def to_environment(self) -> dict[str, str]:
        """These settings for a child process: FRAUDSTREAM_* variables for everything but the
        secrets, which are written owner-only into ``<state_dir>/secrets/`` (named by
        ``FRAUDSTREAM_SECRETS_DIR``): a process's environment is readable in ``/proc``, handed
        to every process it starts and written out whole by some (Beam logs a Python worker's).
        """
        env = {env_var(name): str(_plain(value)) for name, value in self.flat()
               if value is not None and not isinstance(value, SecretStr)}  # fmt: skip
        secrets = {name: value.get_secret_value() for name, value in self.flat()
                   if isinstance(value, SecretStr)}  # fmt: skip
        if secrets:
            env[env_var("secrets_dir")] = str(_write_secrets(self.state_dir / "secrets", secrets))
        return env

    def child_environment(self) -> dict[str, str]:
        """A child process's whole environment: this one's without its FRAUDSTREAM_* variables
        (secrets among them, maybe), then :meth:`to_environment`."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        return inherited | self.to_environment()


def scrub_secrets_from_environment() -> None:
    """Remove secret FRAUDSTREAM_* variables (and any holding a URL with a password) from this
    process's environment once settings are read, so nothing it starts inherits them (a JVM,
    Python workers, uvicorn's processes)."""
    for name in SECRET_NAMES:
        os.environ.pop(env_var(name), None)
    for name, value in list(os.environ.items()):
        if name.startswith(ENV_PREFIX) and _URL_PASSWORD.search(value):
            del os.environ[name]


SECRET_NAMES: Final = tuple(
    f"{group}_{name}" for group, model in GROUPS.items()
    for name, field in model.model_fields.items() if "SecretStr" in str(field.annotation)
)  # fmt: skip
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/@\s]+@")


def _masked(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1**********@", value)
    return _plain(value)


def _write_secrets(directory: Path, secrets: Mapping[str, str]) -> Path:
    """Each secret in its own owner-only file of an owner-only directory; the directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    for name, value in secrets.items():
        path = directory / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(value)
    return directory.resolve()


def _read_secrets(directory: Path, wanted: Iterable[str]) -> dict[str, str]:
    """The secrets ``directory`` holds among ``wanted`` (a file per flat name)."""
    found = {}
    for name in wanted:
        path = directory / name
        if path.is_file():
            found[name] = path.read_text().strip()
    return found


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def env_var(name: str) -> str:
    """The environment variable of a flat setting name."""
    return f"{ENV_PREFIX}{name.upper()}"


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names (``kafka_bootstrap_servers``) as the nested input Settings takes."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        group, _, field = name.partition("_")
        if group in GROUPS and field:
            out.setdefault(group, {})[field] = value
        else:
            out[name] = value
    return out


class StackEndpoints(msgspec.Struct, frozen=True, kw_only=True):
    """The part of ``stack up``'s state file every client reads (``services.devstack.state``)."""

    bootstrap_servers: str
    redis_url: str
    redis_cluster: bool = False  # the URL names one node of a Redis Cluster
    scoring_url: str | None = None  # None when the serve extra is not installed
    pushgateway_url: str | None = None  # with --monitoring: where the job pushes Flink's metrics
    broker: str = "tansu"  # or "kafka": Apache Kafka in KRaft mode
    # With --monitoring: the job's first metrics port, free when the stack started; the stack's
    # Prometheus scrapes that range only, and a job run on the stack binds it.
    job_metrics_port: int | None = None


def read_stack_endpoints(state_dir: Path) -> StackEndpoints | None:
    """The endpoints ``stack up`` recorded in ``state_dir``, or None."""
    try:
        return msgspec.json.decode((state_dir / STACK_FILE).read_bytes(), type=StackEndpoints)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Resolved:
    """Settings and, per flat name, where its value came from."""

    settings: Settings
    sources: dict[str, str]


def resolve(**overrides: Any) -> Resolved:
    """Settings from the environment, then CLI overrides (None: not given), then, for unset
    endpoints, the embedded stack's state file (unless ``stack.endpoints`` is false), and for
    unset secrets the secrets directory."""
    if old := sorted(set(RENAMED) & set(os.environ)):
        raise SettingsError(
            "renamed: " + ", ".join(f"{name} is now {RENAMED[name]}" for name in old)
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = Settings(**nest(given))
    filled: dict[str, Any] = {}
    stack = read_stack_endpoints(settings.state_dir) if settings.stack.endpoints else None
    if stack is not None:
        candidates = {
            "kafka_bootstrap_servers": (settings.kafka.bootstrap_servers, stack.bootstrap_servers),
            "redis_url": (settings.redis.url, stack.redis_url),
            "scoring_url": (settings.scoring.url, stack.scoring_url),
            "job_flink_metrics_push_url": (settings.job.flink_metrics_push_url,
                                           stack.pushgateway_url),
        }  # fmt: skip
        filled = {k: new for k, (old, new) in candidates.items() if old is None and new}
        if "redis_url" in filled and stack.redis_cluster:
            filled["redis_cluster"] = True
        on_stack = "kafka_bootstrap_servers" in filled  # the stack's broker, not another
        if on_stack and stack.broker == "tansu" and not _given("job_delivery", given):
            filled["job_delivery"] = TANSU_DELIVERY
        if on_stack and stack.job_metrics_port and not _given("job_metrics_port", given):
            filled["job_metrics_port"] = stack.job_metrics_port
    origins = dict.fromkeys(filled, f"stack ({settings.state_dir})")
    if settings.secrets_dir is not None:
        unset = [name for name, value in settings.flat() if name in SECRET_NAMES and not value]
        from_files = _read_secrets(settings.secrets_dir, unset)
        filled |= from_files
        origins |= dict.fromkeys(from_files, f"secrets dir ({settings.secrets_dir})")
    key_file = settings.state_dir / TOKEN_KEY_FILE
    if settings.stack.endpoints and "token_key" not in filled and settings.token.key is None \
            and key_file.is_file():  # fmt: skip
        filled["token_key"] = key_file.read_text().strip()
        origins["token_key"] = f"stack ({settings.state_dir})"
    settings = settings.updated(filled)
    sources = {name: _source(name, given, origins) for name, _ in settings.flat()}
    return Resolved(settings, sources)


def _given(name: str, given: Mapping[str, Any]) -> bool:
    return name in given or env_var(name) in os.environ


def _source(name: str, given: Mapping[str, Any], origins: Mapping[str, str]) -> str:
    env = os.environ.get(env_var(name))
    if env is not None and (name not in given or str(given[name]) == env):
        return "environment"
    if name in given:
        return "flag"
    return origins.get(name, "default")


def load_settings(**overrides: Any) -> Settings:
    """The settings every command uses (see :func:`resolve`)."""
    return resolve(**overrides).settings
