"""Strategy versions on their compacted Kafka topic: published by the CLI, followed by every
job worker without a restart.

Each version is one message keyed by its number, so compaction keeps them all and a replay
decides with the version in force at each event's time (``effective_from``), exactly as the
first run did. The publisher refuses a version that takes effect before ``lead_s`` from now:
workers look the topic up every ``POLL_S``, so the version is in every worker before any event
it governs arrives (an event dated further ahead of the clock than that may be decided by the
version before).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from confluent_kafka import Consumer, Producer

from services.core.errors import UserError
from services.core.kafka import assigned_consumer
from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from services.core.signals import Signals
from stream_jobs import strategy as st

log = logging.getLogger(__name__)
POLL_S: Final = 0.5
LEAD_S: Final = 10.0  # a version takes effect at least this long after it is published
READ_TIMEOUT_S: Final = 30.0


class Versions:
    """The compiled versions a worker holds, newest first; replaced whole (a thread swaps the
    tuple, the decider reads it). An event is decided by the newest version in effect at its
    time: a later publication supersedes every earlier one from its effective time on."""

    def __init__(self, compiled: Sequence[st.Compiled]) -> None:
        self._all = tuple(sorted(compiled, key=lambda c: c.version, reverse=True))
        if not self._all:
            raise ValueError("at least one strategy version")

    def for_event(self, event_time_ms: int) -> st.Compiled:
        for compiled in self._all:
            if compiled.strategy.effective_from <= event_time_ms:
                return compiled
        return min(self._all, key=lambda c: c.strategy.effective_from)  # before them all

    def with_(self, compiled: st.Compiled) -> Versions:
        kept = [c for c in self._all if c.version != compiled.version]
        return Versions([*kept, compiled])

    @property
    def all(self) -> tuple[st.Compiled, ...]:
        return self._all


def _decode(value: bytes | None) -> st.Strategy | None:
    if value is None:
        return None  # a tombstone
    try:
        return st.parse(value.decode(), "strategy topic")
    except (st.StrategyError, UnicodeDecodeError) as error:
        log.warning("a strategy message that is not a document was skipped: %s", error)
        return None


def read_published(settings: Settings, timeout: float = READ_TIMEOUT_S) -> list[st.Strategy]:
    """Every version on the topic, read to its end, by version number."""
    consumer = assigned_consumer(settings, [settings.topic.strategy])
    try:
        found = {s.version: s for s in _drain(consumer, settings.topic.strategy, timeout)}
    finally:
        consumer.close()
    return [found[v] for v in sorted(found)]


def _drain(consumer: Consumer, topic: str, timeout: float) -> list[st.Strategy]:
    """What the consumer reads until it is at the topic's end."""
    marks = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout)
             for p in consumer.assignment()}  # fmt: skip
    found: list[st.Strategy] = []
    deadline = time.monotonic() + timeout

    def behind() -> bool:
        return any(marks[p.partition][0] < marks[p.partition][1] > p.offset
                   for p in consumer.position(consumer.assignment()))  # fmt: skip

    while behind():
        if time.monotonic() > deadline:
            raise UserError(f"could not read topic {topic} to its end in {timeout:.0f} s")
        for message in consumer.consume(1_000, timeout=0.2):
            if not message.error() and (document := _decode(message.value())) is not None:
                found.append(document)
    return found


class StrategyFeed:
    """A worker's versions: the shipped default, then each published one as it arrives."""

    def __init__(
        self,
        settings: Settings,
        signals: Signals,
        on_change: Callable[[Versions], None] = lambda _v: None,
    ) -> None:
        self._settings, self._signals, self._on_change = settings, signals, on_change
        self.versions = Versions([st.Compiled(st.default(), signals)])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = READ_TIMEOUT_S) -> None:
        """Read every published version before the first decision, then follow the topic."""
        consumer = assigned_consumer(self._settings, [self._settings.topic.strategy])
        for document in _drain(consumer, self._settings.topic.strategy, timeout):
            self._add(document)
        self._thread = threading.Thread(target=self._follow, args=(consumer,), daemon=True,
                                        name="strategy-feed")  # fmt: skip
        self._thread.start()

    def _follow(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                for message in consumer.consume(100, timeout=POLL_S):
                    if not message.error() and (document := _decode(message.value())):
                        self._add(document)
        finally:
            consumer.close()

    def _add(self, document: st.Strategy) -> None:
        try:
            compiled = st.Compiled(document, self._signals)
        except st.StrategyError as error:  # published against other signals, say
            log.warning("strategy version %d refused by this worker: %s", document.version,
                        error)  # fmt: skip
            return
        self.versions = self.versions.with_(compiled)
        self._on_change(self.versions)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def publish(
    settings: Settings,
    document: st.Strategy,
    signals: Signals,
    now_ms: int | None = None,
    lead_s: float = LEAD_S,
) -> st.Strategy:
    """Validate ``document`` and publish it as the next version; the published document.

    Its ``version`` is the next number when the file leaves it 0; its ``effective_from`` is
    ``lead_s`` from now when the file leaves it 0, and refused when earlier than that."""
    problems = st.check(document, signals)
    if problems:
        raise st.StrategyError("\n".join(problems))
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    earliest = now_ms + int(lead_s * 1000)
    published = read_published(settings)
    latest = max((s.version for s in published), default=0)
    version = document.version or latest + 1
    effective = document.effective_from or earliest
    if version <= latest:
        raise st.StrategyError(f"version {version} is not after the latest, {latest}")
    if effective < earliest:
        raise st.StrategyError(f"effective_from is before {lead_s:.0f} s from now: a version "
                               "never changes what was already decided")  # fmt: skip
    document = document.model_copy(update={"version": version, "effective_from": effective})
    _produce(settings, document)
    return document


def _produce(settings: Settings, document: st.Strategy) -> None:
    producer = Producer({**librdkafka(settings.kafka), "enable.idempotence": True})
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer.produce(settings.topic.strategy, key=f"{document.version:010d}",
                     value=document.model_dump_json(), on_delivery=delivered)  # fmt: skip
    if producer.flush(READ_TIMEOUT_S) or failures:
        raise UserError(f"strategy version {document.version} not published: "
                        f"{failures or 'no acknowledgement'}")  # fmt: skip
