"""The faust-streaming feedback app: remembers alerts, applies analysts' dispositions.

Two agents: ``alerts`` keeps each alert in Redis (what a disposition needs: card, device,
merchant, features, score); ``alert-feedback`` applies each disposition
(``stream_jobs.feedback.dispositions``). A message that is not a valid Feedback goes to
``alert-feedback.dlq`` with the reason. faust commits an offset after its message was
processed, so a killed worker replays the rest, and every write is idempotent.

    fraudstream feedback-app
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import faust
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.contract import DeadLetter, encode
from services.settings import Settings
from stream_jobs.feedback.dispositions import Applied, Dispositions, Rejected
from stream_jobs.job_metrics import serve_metrics

APP_ID = "fraudstream-feedback"
ALERT_WAIT_S = 10.0  # a disposition may overtake its alert (two topics): wait this long
REDIS_RETRY_S = 0.5
_T = TypeVar("_T")


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "fraudstream_feedback"
        self.processed = Counter(
            f"{p}_processed", "Dispositions applied", ["label", "result"], registry=registry
        )
        self.dlq = Counter(f"{p}_dlq", "Invalid dispositions", ["field"], registry=registry)
        self.alerts = Counter(f"{p}_alerts_remembered", "Alerts kept", registry=registry)
        self.ready = Gauge(f"{p}_ready", "1 once partitions are assigned", registry=registry)


async def _until_redis_answers(call: Callable[[bytes], _T], raw: bytes) -> _T:
    """Retry through a Redis outage: an agent that raised would skip its message."""
    while True:
        try:
            return call(raw)
        except redis.RedisError:
            await asyncio.sleep(REDIS_RETRY_S)


def _broker(settings: Settings) -> str:
    return ";".join(f"kafka://{server}" for server in settings.require_kafka().split(","))


def create_app(settings: Settings, metrics: FeedbackMetrics) -> faust.App:
    app = faust.App(
        APP_ID,
        broker=_broker(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1,
    )
    client = redis.Redis.from_url(
        settings.require_redis(),
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
    )
    dispositions = Dispositions(client, settings.feedback_blocklist_ttl_ms)
    alerts = app.topic(settings.topic_alerts)
    feedback = app.topic(settings.topic_feedback)
    dlq = app.topic(settings.topic_feedback_dlq)

    @app.agent(alerts)
    async def remember(stream: Any) -> None:
        async for raw in stream:
            if await _until_redis_answers(dispositions.remember, raw):
                metrics.alerts.inc()

    @app.agent(feedback)
    async def apply(stream: Any) -> None:
        async for event in stream.events():
            raw, source = event.value, event.message
            outcome = await _until_redis_answers(dispositions.apply, raw)
            deadline = time.monotonic() + ALERT_WAIT_S
            while outcome is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                outcome = await _until_redis_answers(dispositions.apply, raw)
            if isinstance(outcome, Applied):
                result = "applied" if outcome.first else "repeat"
                metrics.processed.labels(outcome.feedback.label, result).inc()
                continue
            if outcome is None:
                outcome = Rejected("transaction_id", "no alert known for this transaction")
            metrics.dlq.labels(outcome.field).inc()
            letter = DeadLetter(
                field=outcome.field, reason=outcome.reason, raw=raw,
                source_topic=source.topic, partition=source.partition, offset=source.offset,
                failed_at=int(time.time() * 1000),
            )  # fmt: skip
            await dlq.send(key=source.key, value=encode(letter))

    @app.on_rebalance_complete.connect
    async def _ready(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        metrics.ready.set(1)

    return app


def run(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT (faust's own signal handling and shutdown)."""
    metrics = FeedbackMetrics(CollectorRegistry())
    serve_metrics(metrics.registry, settings.feedback_metrics_port)
    app = create_app(settings, metrics)
    worker = faust.Worker(app, loglevel="WARNING", redirect_stdouts=False)
    worker.execute_from_commandline()
