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
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import faust
import redis
from prometheus_client import Counter

from models import lake as lk
from services.core.contract import InvalidEvent, encode
from services.core.dead_letters import DeadLetterLog
from services.core.dead_letters import dead_letter as build_dead_letter
from services.core.exposition import component_registry, serve_metrics
from services.core.kafka import topic_epochs
from services.core.kafka_config import aiokafka
from services.core.lag import LagProbe
from services.core.settings import KafkaSettings, Settings
from stream_jobs.feedback.archive import Archiver
from stream_jobs.feedback.dispositions import Disposition, Dispositions, Rejected
from stream_jobs.feedback.metrics import FeedbackMetrics
from stream_jobs.feedback.writer import BATCH_ROWS, append_until_written

log = logging.getLogger(__name__)
APP_ID = "fraudstream-feedback"
ALERT_WAIT_S = 10.0  # a disposition may overtake its alert (two topics): wait this long
REDIS_RETRY_S = 0.5
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


def _sourced(event: Any, row: dict[str, Any], epochs: dict[str, str]) -> lk.Sourced:
    message = event.message
    epoch = epochs.get(message.topic, "")
    return lk.Sourced(message.topic, message.partition, message.offset, row, epoch)


def credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """The aiokafka rendering of the one Kafka configuration, as faust's credentials."""
    options = aiokafka(kafka)
    context = options.get("ssl_context")
    if "sasl_mechanism" in options:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"], password=options["sasl_plain_password"],
            mechanism=options["sasl_mechanism"], ssl_context=context,
        )  # fmt: skip
    return faust.SSLCredentials(context) if context else None


def create_app(settings: Settings, metrics: FeedbackMetrics, lag: LagProbe) -> faust.App:
    brokers = aiokafka(settings.kafka)["bootstrap_servers"]
    app = faust.App(
        APP_ID,
        broker=";".join(f"kafka://{server}" for server in brokers),
        broker_credentials=credentials(settings.kafka),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(settings.state_dir / "feedback-app"),  # faust's own files, not in the cwd
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # A restarted worker rejoins in seconds: the group waits one session timeout for the
        # member that died (faust's default, 60 s, made a restart take about 112 s to be ready).
        broker_session_timeout=settings.feedback.session_timeout_s,
        broker_heartbeat_interval=settings.feedback.session_timeout_s / 12,
        broker_rebalance_timeout=settings.feedback.session_timeout_s * 2,
    )
    dispositions = Dispositions(settings.redis.client(), settings.feedback.blocklist_ttl_ms)
    lake = lk.Lake(settings.lake_path)
    epochs: dict[str, str] = {}  # topic -> its topic id, for the lake's offsets
    alerts = app.topic(settings.topic.alerts)
    feedback = app.topic(settings.topic.feedback)
    dlq = app.topic(settings.topic.feedback_dlq)

    async def learn_epochs() -> None:
        """The feedback topic's incarnation (its id), for the lake's offsets of ``labels``."""
        epochs.update(await asyncio.to_thread(topic_epochs, settings, [settings.topic.feedback]))

    def processed(event: Any) -> None:
        message = event.message
        lag.processed([(message.topic, message.partition, message.offset)])
        metrics.message_age(message.topic, message.timestamp)

    @app.agent(alerts)
    async def remember(stream: Any) -> None:
        timer = metrics.processing.labels("alerts")
        async for event in stream.events():
            with timer.time():
                if await _until_redis_answers(
                    dispositions.remember, event.value, metrics.redis_retries
                ):
                    metrics.alerts.inc()
            processed(event)

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

    letters = DeadLetterLog(log)

    async def dead_letter(event: Any, rejected: Rejected) -> None:
        metrics.dlq.labels(rejected.field).inc()
        source = event.message
        letter = build_dead_letter(
            InvalidEvent(rejected.field, rejected.reason), event.value or b"", source.key,
            (source.topic, source.partition, source.offset), settings.dlq.raw_bytes,
        )  # fmt: skip
        letters.record(letter)
        await dlq.send(key=source.key, value=encode(letter))

    @app.agent(feedback)
    async def apply(stream: Any) -> None:
        timer = metrics.processing.labels("alert-feedback")
        async for event in stream.events():
            with timer.time():
                outcome = await with_alert(dispositions.apply, event.value)
                if isinstance(outcome, Rejected):
                    await dead_letter(event, outcome)
                else:
                    result = "applied" if outcome.first else "repeat"
                    metrics.processed.labels(outcome.feedback.label, result).inc()
            processed(event)

    # Its own agent on the same topic, so a lake outage never holds back a blocklisting.
    @app.agent(feedback, name="lake-labels")
    async def label_lake(stream: Any) -> None:
        timer = metrics.processing.labels("lake-labels")
        async for events in stream.take_events(BATCH_ROWS, within=settings.lake.flush_s):
            with timer.time():
                await label_batch(events)

    async def label_batch(events: list[Any]) -> None:
        if settings.topic.feedback not in epochs:  # before the first rebalance's answer
            await learn_epochs()
        records = []
        for event in events:
            found = await with_alert(dispositions.context, event.value)
            if isinstance(found, Disposition):  # a rejected one is the other agent's
                row = lk.label_row(found.feedback, found.alert)
                records.append(_sourced(event, row, epochs))
        # Never given up on: an agent that returned would have its batch acknowledged.
        await asyncio.to_thread(append_until_written, lake, "labels", records, metrics)

    @app.on_rebalance_complete.connect
    async def _ready(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        await learn_epochs()  # again at each rebalance: a broker may have come back empty
        metrics.mark_ready()

    return app


def run(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT (faust's own signal handling and shutdown)."""
    metrics = FeedbackMetrics(component_registry())
    feedback = settings.feedback
    serve_metrics(metrics.registry, feedback.metrics_host, feedback.metrics_port,
                  ready=metrics.is_ready)  # fmt: skip
    lag = LagProbe(settings, metrics.report_lag)
    app = create_app(settings, metrics, lag)
    archiver = Archiver(settings, lk.Lake(settings.lake_path), metrics, lag)
    archiver.start()
    worker = faust.Worker(app, loglevel="WARNING", redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        archiver.stop()
        lag.close()
