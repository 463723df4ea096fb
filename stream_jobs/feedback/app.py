"""The faust-streaming feedback app: remembers alerts, applies analysts' dispositions, and
keeps the lake.

Agents: ``alerts`` keeps each alert's context in Redis (what a disposition needs) and applies
the dispositions parked for its transaction; ``alert-feedback`` applies each disposition
(``stream_jobs.feedback.dispositions``) whose transaction is known, parks the others without
waiting, and publishes each one applied to ``labels``; a timer applies parked dispositions
once their transaction is known (its alert, or the lake's archive for one never alerted) and
dead-letters those still unknown after ``feedback_park_s``. A thread (``archive``) writes every
transaction, decision and applied label to the lake. A message that is not a valid Feedback,
or that meets an error that would recur (a key of the wrong type in Redis), goes to
``alert-feedback.dlq`` with the reason (``fraudstream feedback redrive`` sends them again); an
outage (Redis down) is retried with back-off, and an agent stuck on one message longer than
``feedback_stuck_s`` makes the app not ready, ``/readyz`` naming the message and the error.
faust commits an offset once the agent has processed the message, so a killed worker
replays the rest: every Redis write is idempotent and the lake skips records its manifest
has (``models.lake.tables``). SIGTERM stops the app within ``STOP_DEADLINE_S`` whatever is down.

    fraudstream feedback-app
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import faust
from aiokafka.errors import KafkaError as AioKafkaError

from models.lake import tables as lk
from models.online.layout import AlertContext
from models.online.ops import is_transient
from services.core.contract import Feedback, InvalidEvent, decode_chargeback, encode
from services.core.dead_letters import DeadLetterLog
from services.core.dead_letters import dead_letter as build_dead_letter
from services.core.exposition import component_registry, serve_metrics
from services.core.kafka_config import aiokafka
from services.core.lag import LagProbe
from services.core.settings import KafkaSettings, Settings
from services.core.throttled_log import ThrottledLog
from stream_jobs.feedback.archive import Archiver
from stream_jobs.feedback.dispositions import Applied, Dispositions, Parked, Rejected, decode
from stream_jobs.feedback.metrics import FeedbackMetrics

log = logging.getLogger(__name__)
APP_ID = "fraudstream-feedback"
STOP_DEADLINE_S: Final = 9.0  # SIGTERM to exit, whatever is down
STOPPED_AT_DEADLINE: Final = 3  # the exit status of a stop the deadline cut short
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 15.0  # back-off of a message retried through an outage
SWEEP_S: Final = 2.0  # how often parked dispositions are looked at
SWEEP_BATCH: Final = 500
DAY_MS: Final = 86_400_000
LOOK_AGAIN_MAX_MS: Final = 600_000  # a transaction not found: looked for again, at most this late


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


@dataclass
class _Stuck:
    """What an agent is retrying, since when, and why."""

    where: str
    since: float
    error: str


class Health:
    """Whether the app is ready: partitions assigned, no agent stuck on one message too long,
    its event loop answering; and if not, why (``/readyz`` says it)."""

    def __init__(self, stuck_s: float) -> None:
        self._stuck_s = stuck_s
        self.assigned = threading.Event()
        self.stuck: dict[str, _Stuck] = {}
        self.loop_seen = time.monotonic()

    def why_not(self) -> str | None:
        if not self.assigned.is_set():
            return "partitions not assigned yet"
        now = time.monotonic()
        if now - self.loop_seen > self._stuck_s:
            return f"event loop unresponsive for {now - self.loop_seen:.0f} s"
        for agent, stuck in self.stuck.items():
            if now - stuck.since > self._stuck_s:
                return (f"{agent} stuck on {stuck.where} for {now - stuck.since:.0f} s: "
                        f"{stuck.error}")  # fmt: skip
        return None


def create_app(
    settings: Settings, metrics: FeedbackMetrics, health: Health, lag: LagProbe
) -> faust.App:
    brokers = aiokafka(settings.kafka)["bootstrap_servers"]
    fb = settings.feedback
    # faust makes its data directory but not its parents: a fresh state directory (a new
    # volume, a container's empty /tmp) would stop the app before it starts.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        APP_ID,
        broker=";".join(f"kafka://{server}" for server in brokers),
        broker_credentials=credentials(settings.kafka),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(settings.state_dir / "feedback-app"),  # faust's own files, not in the cwd
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",  # dispositions are idempotent: none is skipped
        # A restarted worker rejoins in seconds: the group waits one session timeout for the
        # member that died (faust's default, 60 s, made a restart take about 112 s to be ready).
        broker_session_timeout=fb.session_timeout_s,
        broker_heartbeat_interval=fb.session_timeout_s / 12,
        broker_rebalance_timeout=fb.session_timeout_s * 2,
    )
    timeout = fb.redis_timeout_s
    redis = settings.redis.async_client(socket_timeout=timeout, socket_connect_timeout=timeout)
    ttl_ms = int(fb.alert_ttl_days * 86_400_000)
    dispositions = Dispositions(redis, fb.blocklist_ttl_ms, ttl_ms)
    lake = lk.Lake(settings.lake_path)
    alerts = app.topic(settings.topic.alerts)
    feedback = app.topic(settings.topic.feedback)
    dlq = app.topic(settings.topic.feedback_dlq)
    labels = app.topic(settings.topic.labels)
    chargebacks = app.topic(settings.topic.chargebacks)
    letters, warnings = DeadLetterLog(log), ThrottledLog(log)
    parking = asyncio.Lock()

    def processed(event: Any) -> None:
        message = event.message
        lag.processed([(message.topic, message.partition, message.offset)])
        metrics.message_age(message.topic, message.timestamp)

    async def dead_letter(raw: bytes, source: tuple[str, int, int], why: Rejected) -> None:
        metrics.dlq.labels(why.field).inc()
        invalid = InvalidEvent(why.field, why.reason)
        letter = build_dead_letter(invalid, raw, None, source, settings.dlq.raw_bytes)
        letters.record(letter)
        await (await dlq.send(key=letter.key, value=encode(letter)))  # acknowledged: then done

    async def retrying(agent: str, where: str, call: Callable[[], Awaitable[None]]) -> None:
        """``call`` until it succeeds, waiting out an outage with back-off (counted, and
        reported by readiness once it lasts); an error that would recur is raised."""
        pause = RETRY_FIRST_S
        try:
            while True:
                try:
                    return await call()
                except Exception as error:
                    if not _transient(error):
                        raise
                    metrics.redis_retries.inc()
                    health.stuck.setdefault(agent, _Stuck(where, time.monotonic(), ""))
                    health.stuck[agent].error = f"{type(error).__name__}: {error}"
                    warnings.warning(agent, "%s: %s on %s; retrying", agent,
                                     health.stuck[agent].error, where)  # fmt: skip
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_S)
        finally:
            health.stuck.pop(agent, None)

    async def publish(applied: Applied) -> None:
        record = applied.record
        result = "applied" if applied.changed else "repeat"
        metrics.processed.labels(record.label, result).inc()
        # Acknowledged before the disposition counts as processed (its offset committed): a
        # worker killed in between replays it, and publishes it again.
        await (await labels.send(key=record.transaction_id.encode(), value=encode(record)))

    async def apply_parked(transaction_id: str, context: AlertContext) -> None:
        """Apply what is parked for a transaction now known, in the order it arrived; one that
        meets an error that would recur becomes a dead letter (an outage is raised)."""
        async with parking:  # one at a time: two would each trim what they read
            parked = await dispositions.parked(transaction_id)
            for entry in parked:
                parsed = decode(entry.raw)
                try:
                    if isinstance(parsed, Feedback):
                        await publish(await dispositions.apply(parsed, context))
                    metrics.unparked.labels("applied").inc()
                except Exception as error:
                    if _transient(error):
                        raise
                    why = Rejected("$", f"{type(error).__name__}: {error}")
                    source = (settings.topic.feedback, entry.partition, entry.offset)
                    await dead_letter(entry.raw, source, why)
                    metrics.unparked.labels("dead_letter").inc()
            if parked:
                await dispositions.unpark(transaction_id, len(parked))

    async def handle(raw: bytes, partition: int, offset: int) -> None:
        parsed = decode(raw)
        if isinstance(parsed, Rejected):
            await dead_letter(raw, (settings.topic.feedback, partition, offset), parsed)
            return
        context = await dispositions.context(parsed.transaction_id)
        if context is None:  # not known yet: parked, and the next message goes on
            entry = Parked(partition, offset, raw, _now_ms())
            await dispositions.park(parsed.transaction_id, entry, _park_ms(fb.park_s))
            metrics.parked.inc()
            return
        await apply_parked(parsed.transaction_id, context)  # earlier ones first
        await publish(await dispositions.apply(parsed, context))

    @app.agent(alerts)
    async def remember(stream: Any) -> None:
        timer = metrics.processing.labels("alerts")
        async for event in stream.events():
            where = f"{event.message.topic} {event.message.partition}@{event.message.offset}"

            async def one(raw: bytes = event.value or b"") -> None:
                transaction_id = await dispositions.remember(raw)
                if transaction_id is not None:
                    metrics.alerts.inc()
                    context = await dispositions.context(transaction_id)
                    if context is not None:
                        await apply_parked(transaction_id, context)

            with timer.time():
                try:
                    await retrying("alerts", where, one)
                except Exception as error:  # would recur: this alert is skipped, said once
                    metrics.alerts_skipped.inc()
                    warnings.warning("alerts-skipped", "alert %s skipped: %s: %s", where,
                                     type(error).__name__, error)  # fmt: skip
            processed(event)

    @app.agent(feedback)
    async def apply(stream: Any) -> None:
        timer = metrics.processing.labels("alert-feedback")
        async for event in stream.events():
            message, raw = event.message, event.value or b""
            where = f"{message.topic} {message.partition}@{message.offset}"

            async def one(raw: bytes = raw, partition: int = message.partition,
                          offset: int = message.offset) -> None:  # fmt: skip
                try:
                    await handle(raw, partition, offset)
                except Exception as error:
                    if _transient(error):
                        raise
                    log.debug("disposition %d@%d failed", partition, offset, exc_info=True)
                    why = Rejected("$", f"{type(error).__name__}: {error}")  # would recur
                    await dead_letter(raw, (settings.topic.feedback, partition, offset), why)

            with timer.time():
                await retrying("alert-feedback", where, one)  # its dead letter's send too
            processed(event)

    @app.agent(chargebacks)
    async def forward(stream: Any) -> None:
        """Each chargeback becomes a fraud disposition on ``alert-feedback`` (acknowledged
        before its offset commits; a repeat applies as a repeat), so it takes the one path
        every label takes; one that is not a chargeback is a dead letter naming this topic."""
        async for event in stream.events():
            message, raw = event.message, event.value or b""
            where = f"{message.topic} {message.partition}@{message.offset}"

            async def one(raw: bytes = raw, partition: int = message.partition,
                          offset: int = message.offset) -> None:  # fmt: skip
                parsed = decode_chargeback(raw)
                if isinstance(parsed, InvalidEvent):
                    why = Rejected(parsed.field, parsed.reason)
                    await dead_letter(raw, (settings.topic.chargebacks, partition, offset), why)
                    return
                label = parsed.feedback()
                sent = await feedback.send(key=label.transaction_id.encode(), value=encode(label))
                await sent
                metrics.chargebacks.inc()

            await retrying("chargebacks", where, one)
            processed(event)

    @app.timer(interval=SWEEP_S)  # type: ignore[untyped-decorator]
    async def sweep() -> None:
        """Parked dispositions: applied once their transaction is known, dead letters once
        they have waited ``feedback_park_s``. Not while an agent waits out an outage."""
        if health.stuck:
            return
        try:
            await _sweep(settings, dispositions, lake, apply_parked, dead_letter, metrics)
        except Exception as error:  # tried again at the next tick
            log.debug("sweeping parked dispositions failed", exc_info=True)
            warnings.warning("sweep", "parked dispositions not swept: %s: %s",
                             type(error).__name__, error)  # fmt: skip

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        """The event loop answers (a blocking call would stop this)."""
        health.loop_seen = time.monotonic()
        for agent in ("alerts", "alert-feedback", "chargebacks"):
            stuck = health.stuck.get(agent)
            metrics.stuck_seconds.labels(agent).set(time.monotonic() - stuck.since if stuck else 0)

    @app.on_rebalance_complete.connect
    async def _assigned(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        health.assigned.set()

    return app


async def _sweep(
    settings: Settings,
    dispositions: Dispositions,
    lake: lk.Lake,
    apply_parked: Callable[[str, AlertContext], Awaitable[None]],
    dead_letter: Callable[[bytes, tuple[str, int, int], Rejected], Awaitable[None]],
    metrics: FeedbackMetrics,
) -> None:
    now = _now_ms()
    metrics.parked_now.set(await dispositions.waiting_count())
    unknown: dict[str, list[Parked]] = {}
    for transaction_id in await dispositions.due(now, SWEEP_BATCH):
        context = await dispositions.context(transaction_id)
        if context is not None:
            await apply_parked(transaction_id, context)
        else:
            unknown[transaction_id] = await dispositions.parked(transaction_id)
    if not unknown:
        return
    rows = await asyncio.to_thread(_in_lake, lake, unknown, now, settings.feedback.lookup_days)
    for transaction_id, parked in unknown.items():
        since = min((p.at_ms for p in parked), default=now)
        if transaction_id in rows:
            await apply_parked(transaction_id, AlertContext.of_lake(rows[transaction_id]))
        elif now - since > settings.feedback.park_s * 1000:
            why = Rejected("transaction_id", "no transaction known: neither alerted nor in the "
                           f"lake after {settings.feedback.park_s:.0f} s")  # fmt: skip
            for entry in parked:
                await dead_letter(entry.raw, (settings.topic.feedback, entry.partition,
                                              entry.offset), why)  # fmt: skip
                metrics.unparked.labels("dead_letter").inc()
            await dispositions.unpark(transaction_id, len(parked))
        else:  # looked for again later, the longer it has waited the later
            wait = min(max(SWEEP_S * 1000, (now - since) // 4), LOOK_AGAIN_MAX_MS)
            await dispositions.look_again(transaction_id, now + int(wait))


def _in_lake(
    lake: lk.Lake, unknown: dict[str, list[Parked]], now_ms: int, lookup_days: int
) -> dict[str, dict[str, Any]]:
    """The transactions found in the lake: around the day a disposition names
    (``event_time``), else within the last ``lookup_days``."""
    by_window: dict[tuple[int, int], list[str]] = {}
    for transaction_id, parked in unknown.items():
        feedbacks = [f for p in parked if isinstance(f := decode(p.raw), Feedback)]
        hints = [f.event_time for f in feedbacks if isinstance(f.event_time, int)]
        window = ((min(hints) - DAY_MS, max(hints) + DAY_MS) if hints
                  else (now_ms - lookup_days * DAY_MS, now_ms + DAY_MS))  # fmt: skip
        by_window.setdefault(window, []).append(transaction_id)
    found: dict[str, dict[str, Any]] = {}
    for (since, until), ids in by_window.items():
        found |= lk.find_transactions(lake, ids, since, until)
    return found


def _transient(error: BaseException) -> bool:
    """An outage to wait out: Redis's (``is_transient``), or Kafka's (a send that timed out)."""
    return is_transient(error) or isinstance(error, AioKafkaError)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _park_ms(park_s: float) -> int:
    """How long Redis keeps a parked disposition: past the time it may wait, then a sweep."""
    return int(park_s * 1000) + 3_600_000


class _Worker(faust.Worker):
    """faust's worker, whose stop is bounded: a stop that outlasts ``STOP_DEADLINE_S`` (a
    broker or Redis gone) ends the process; nothing is lost (offsets not committed replay)."""

    def __init__(self, *args: Any, on_stop: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_stop = on_stop

    def _schedule_shutdown(self, signal: Any) -> None:
        if not self._signal_stop_time:  # the deadline first, then what may hang
            threading.Thread(target=_deadline, name="stop-deadline", daemon=True).start()
            threading.Thread(target=self._on_stop, name="stop-archive", daemon=True).start()
        super()._schedule_shutdown(signal)


def _deadline() -> None:
    time.sleep(STOP_DEADLINE_S)
    log.warning("stopping took over %.0f s (something is down): exiting now; what was not "
                "committed is replayed at the next start", STOP_DEADLINE_S)  # fmt: skip
    logging.shutdown()
    os._exit(STOPPED_AT_DEADLINE)


def run(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT (faust's own signal handling, bounded)."""
    metrics = FeedbackMetrics(component_registry())
    health = Health(settings.feedback.stuck_s)
    metrics.ready.set_function(lambda: float(health.why_not() is None))
    feedback = settings.feedback
    serve_metrics(metrics.registry, feedback.metrics_host, feedback.metrics_port,
                  ready=health.why_not)  # fmt: skip
    lag = LagProbe(settings, metrics.report_lag)
    app = create_app(settings, metrics, health, lag)
    archiver = Archiver(settings, lk.Lake(settings.lake_path), metrics, lag)
    archiver.start()
    worker = _Worker(app, loglevel="WARNING", redirect_stdouts=False, on_stop=archiver.stop)
    try:
        worker.execute_from_commandline()
    finally:
        archiver.stop()
        lag.close()
