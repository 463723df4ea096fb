"""The faust-streaming feedback app: remembers alerts, applies analysts' dispositions, and
keeps the lake.

Agents: ``alerts`` keeps each alert in Redis (what a disposition needs: card, device,
merchant, features, score); ``alert-feedback`` applies each disposition
(``stream_jobs.feedback.dispositions``); ``lake-labels``, on the same topic, appends it,
joined with its alert, to the lake's ``labels``. A thread (``archive``) writes every
transaction and decision to the lake's raw zone. A message that is not a valid Feedback goes to
``alert-feedback.dlq`` with the reason. faust commits an offset once every agent on its
topic has processed the message, so a killed worker replays the rest: Redis writes are
idempotent and the lake skips records its manifest has (``models.lake``).

    fraudstream feedback-app
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar

import faust
import redis
from prometheus_client import CollectorRegistry, Counter

from models import lake as lk
from services.contract import DeadLetter, encode
from services.settings import Settings
from stream_jobs.feedback.archive import Archiver
from stream_jobs.feedback.dispositions import Disposition, Dispositions, Rejected
from stream_jobs.feedback.metrics import FeedbackMetrics
from stream_jobs.feedback.writer import BATCH_ROWS, append_until_written
from stream_jobs.job_metrics import serve_metrics

APP_ID = "fraudstream-feedback"
ALERT_WAIT_S = 10.0  # a disposition may overtake its alert (two topics): wait this long
REDIS_RETRY_S = 0.5
LAG_EVERY_S = 5.0
_T = TypeVar("_T")
_D = TypeVar("_D", bound=Disposition)


async def _until_redis_answers(call: Callable[[bytes], _T], raw: bytes, retries: Counter) -> _T:
    """Retry through a Redis outage: an agent that raised would skip its message."""
    while True:
        try:
            return call(raw)
        except redis.RedisError:
            retries.inc()
            await asyncio.sleep(REDIS_RETRY_S)


def _broker(settings: Settings) -> str:
    return ";".join(f"kafka://{server}" for server in settings.require_kafka().split(","))


def _sourced(event: Any, row: dict[str, Any]) -> lk.Sourced:
    message = event.message
    return lk.Sourced(message.topic, message.partition, message.offset, row)


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    ca = settings.kafka_ssl_ca_location
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if settings.kafka_ssl_certificate_location:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            settings.kafka_ssl_certificate_location,
            settings.kafka_ssl_key_location,
            password.get_secret_value() if password else None,
        )
    return context


def credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The same FRAUDSTREAM_KAFKA_* security settings the librdkafka clients use."""
    protocol = settings.kafka_security_protocol
    context = _ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context else None


def create_app(settings: Settings, metrics: FeedbackMetrics) -> faust.App:
    app = faust.App(
        APP_ID,
        broker=_broker(settings),
        broker_credentials=credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(settings.state_dir / "feedback-app"),  # faust's own files, not in the cwd
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
    )
    dispositions = Dispositions(settings.redis_client(), settings.feedback_blocklist_ttl_ms)
    lake = lk.Lake(settings.lake)
    alerts = app.topic(settings.topic_alerts)
    feedback = app.topic(settings.topic_feedback)
    dlq = app.topic(settings.topic_feedback_dlq)

    @app.agent(alerts)
    async def remember(stream: Any) -> None:
        async for raw in stream:
            if await _until_redis_answers(dispositions.remember, raw, metrics.redis_retries):
                metrics.alerts.inc()

    async def with_alert(
        call: Callable[[bytes], _D | Rejected | None], raw: bytes
    ) -> _D | Rejected:
        """``call`` until the message's alert is known, for at most ALERT_WAIT_S."""
        deadline = time.monotonic() + ALERT_WAIT_S
        while (outcome := await _until_redis_answers(call, raw, metrics.redis_retries)) is None:
            if time.monotonic() >= deadline:
                return Rejected("transaction_id", "no alert known for this transaction")
            await asyncio.sleep(0.1)
        return outcome

    async def dead_letter(event: Any, rejected: Rejected) -> None:
        metrics.dlq.labels(rejected.field).inc()
        source = event.message
        letter = DeadLetter(
            field=rejected.field, reason=rejected.reason, raw=event.value,
            source_topic=source.topic, partition=source.partition, offset=source.offset,
            failed_at=int(time.time() * 1000),
        )  # fmt: skip
        await dlq.send(key=source.key, value=encode(letter))

    @app.agent(feedback)
    async def apply(stream: Any) -> None:
        async for event in stream.events():
            outcome = await with_alert(dispositions.apply, event.value)
            if isinstance(outcome, Rejected):
                await dead_letter(event, outcome)
            else:
                result = "applied" if outcome.first else "repeat"
                metrics.processed.labels(outcome.feedback.label, result).inc()

    # Its own agent on the same topic, so a lake outage never holds back a blocklisting.
    @app.agent(feedback, name="lake-labels")
    async def label_lake(stream: Any) -> None:
        async for events in stream.take_events(BATCH_ROWS, within=settings.lake_flush_s):
            records = []
            for event in events:
                found = await with_alert(dispositions.context, event.value)
                if isinstance(found, Disposition):  # a rejected one is the other agent's
                    records.append(_sourced(event, lk.label_row(found.feedback, found.alert)))
            # Never given up on: an agent that returned would have its batch acknowledged.
            await asyncio.to_thread(append_until_written, lake, "labels", records, metrics)

    @app.timer(LAG_EVERY_S)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _lag() -> None:
        lag: dict[str, int] = {}
        for tp in app.consumer.assignment():
            position = await app.consumer.position(tp)
            behind = max(0, (app.consumer.highwater(tp) or 0) - (position or 0))
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
        for topic, behind in lag.items():
            metrics.lag.labels(topic).set(behind)

    @app.on_rebalance_complete.connect
    async def _ready(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        metrics.ready.set(1)

    return app


def run(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT (faust's own signal handling and shutdown)."""
    metrics = FeedbackMetrics(CollectorRegistry())
    serve_metrics(metrics.registry, settings.feedback_metrics_port)
    app = create_app(settings, metrics)
    archiver = Archiver(settings, lk.Lake(settings.lake), metrics)
    archiver.start()
    worker = faust.Worker(app, loglevel="WARNING", redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        archiver.stop()
