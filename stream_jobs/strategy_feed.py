"""Strategy versions on their compacted Kafka topic: published by the CLI, followed by every
job worker without a restart.

Each version is one message keyed by its number, so compaction keeps them all and a replay
decides with the version in force at each event's time (``effective_from``), exactly as the
first run did. The publisher refuses a version that takes effect before ``lead_s`` from now:
workers look the topic up every ``POLL_S``, so the version is in every worker before any event
it governs arrives (an event dated further ahead of the clock than that may be decided by the
version before). Workers hold to the same rules whoever writes to the topic: the first
document of a version number counts, one dated before its own message (a rewrite of what was
decided) is refused, and an empty message (a tombstone, ``rules revoke``) withdraws a version:
the one place where a replay decides otherwise than the first run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from confluent_kafka import Consumer, Message, Producer

from services.core.errors import UserError
from services.core.kafka import assigned_consumer
from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from services.core.signals import MAX_FILE_BYTES, Signals
from services.core.throttled_log import ThrottledLog
from stream_jobs import strategy as st
from stream_jobs.metrics import JobMetrics

log = logging.getLogger(__name__)
POLL_S: Final = 0.5
LEAD_S: Final = 10.0  # a version takes effect at least this long after it is published
SKEW_S: Final = 5.0  # allowed between the publisher's clock and its message's timestamp
READ_TIMEOUT_S: Final = 30.0
RETRY_S: Final = 5.0  # a missing topic or a failing consumer is tried again this often


class Versions:
    """The compiled versions a worker holds, newest first; replaced whole (a thread swaps the
    tuple, the decider reads it). An event is decided by the newest version in effect at its
    time (``strategy.in_force``): a later publication supersedes every earlier one from its
    effective time on."""

    def __init__(self, compiled: Sequence[st.Compiled]) -> None:
        self._all = tuple(sorted(compiled, key=lambda c: c.version, reverse=True))
        if not self._all:
            raise ValueError("at least one strategy version")

    def for_event(self, event_time_ms: int) -> st.Compiled:
        for compiled in self._all:
            if compiled.strategy.effective_from <= event_time_ms:
                return compiled
        return min(self._all, key=lambda c: c.strategy.effective_from)  # before them all

    @property
    def all(self) -> tuple[st.Compiled, ...]:
        return self._all


@dataclass(frozen=True)
class Published:
    """The topic, folded: each version's document, or None once revoked; what was refused."""

    documents: dict[int, st.Strategy | None]
    refused: list[str]

    @property
    def live(self) -> list[st.Strategy]:
        return [d for _, d in sorted(self.documents.items()) if d is not None]

    @property
    def latest(self) -> int:
        return max(self.documents, default=0)


def fold(messages: Iterable[Message]) -> Published:
    """What the topic's messages say, in order, by the workers' rules."""
    documents: dict[int, st.Strategy | None] = {}
    refused: list[str] = []
    for message in messages:
        problem = _apply(message, documents)
        if problem:
            refused.append(problem)
    return Published(documents, refused)


def _apply(message: Message, documents: dict[int, st.Strategy | None]) -> str | None:
    """Apply one message to ``documents``; why it was refused, or None."""
    try:
        version = int(message.key() or b"")
    except ValueError:
        return f"a message without a version number as its key: {message.key()!r:.40}"
    value = message.value()
    if value is None:
        documents[version] = None  # revoked, for good
        return None
    if version in documents:
        return f"version {version} again: the first one counts"
    try:
        document = st.parse(value.decode(), f"version {version}")
    except (st.StrategyError, UnicodeDecodeError) as error:
        return str(error)[:500]
    stamped = message.timestamp()[1]
    if document.version != version:
        return f"version {version}: its document says {document.version}"
    if stamped > 0 and document.effective_from < stamped + (LEAD_S - SKEW_S) * 1000:
        return f"version {version}: in force before it was published"
    documents[version] = document
    return None


def read_published(settings: Settings, timeout: float = READ_TIMEOUT_S) -> Published:
    """The topic read to its end, folded."""
    consumer = assigned_consumer(settings, [settings.topic.strategy])
    try:
        return fold(_drain(consumer, settings.topic.strategy, timeout))
    finally:
        consumer.close()


def _drain(consumer: Consumer, topic: str, timeout: float) -> list[Message]:
    """What the consumer reads until it is at the topic's end."""
    marks = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout)
             for p in consumer.assignment()}  # fmt: skip
    found: list[Message] = []
    deadline = time.monotonic() + timeout

    def behind() -> bool:
        return any(marks[p.partition][0] < marks[p.partition][1] > p.offset
                   for p in consumer.position(consumer.assignment()))  # fmt: skip

    while behind():
        if time.monotonic() > deadline:
            raise UserError(f"could not read topic {topic} to its end in {timeout:.0f} s")
        found += [m for m in consumer.consume(1_000, timeout=0.2) if not m.error()]
    return found


class StrategyFeed:
    """A worker's versions: the shipped default, then each published one as it arrives.

    Nothing on the topic stops the worker: a refused version is logged and counted
    (``fraudstream_job_strategy_refused_total``), a missing topic or a failing consumer is
    tried again every ``RETRY_S`` (the shipped default decides meanwhile)."""

    def __init__(self, settings: Settings, signals: Signals, metrics: JobMetrics | None = None):
        self._settings, self._signals, self._metrics = settings, signals, metrics
        self._default = st.Compiled(st.default(), signals)
        self.versions = Versions([self._default])
        self._documents: dict[int, st.Strategy | None] = {}
        self._compiled: dict[int, st.Compiled] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warnings = ThrottledLog(log)

    def start(self, timeout: float = READ_TIMEOUT_S) -> None:
        """Read every published version before the first decision, then follow the topic."""
        consumer = assigned_consumer(self._settings, [self._settings.topic.strategy])
        try:
            self._take(_drain(consumer, self._settings.topic.strategy, timeout))
        except Exception:
            consumer.close()
            raise
        if not consumer.assignment():
            log.warning("topic %s is missing: deciding by the shipped strategy until it exists",
                        self._settings.topic.strategy)  # fmt: skip
        self._thread = threading.Thread(target=self._follow, args=(consumer,), daemon=True,
                                        name="strategy-feed")  # fmt: skip
        self._thread.start()

    def _follow(self, consumer: Consumer) -> None:
        while not self._stop.is_set():
            try:
                if not consumer.assignment():  # the topic did not exist: look again
                    self._stop.wait(RETRY_S)
                    consumer.close()
                    consumer = assigned_consumer(self._settings, [self._settings.topic.strategy])
                    continue
                self._take(m for m in consumer.consume(100, timeout=POLL_S) if not m.error())
                if self._metrics is not None:
                    self._metrics.strategy_polled.set_to_current_time()
            except Exception as error:  # never a dead thread: say so, and try again
                self._warnings.warning("strategy_feed", "the strategy feed failed (%s: %s); "
                                       "trying again", type(error).__name__, error)  # fmt: skip
                self._stop.wait(RETRY_S)
        consumer.close()

    def _take(self, messages: Iterable[Message]) -> None:
        changed = False
        for message in messages:
            problem = _apply(message, self._documents)
            if problem is None:
                changed |= self._compile(int(message.key() or b""))
            else:
                self._refused(problem)
        if changed:
            self.versions = Versions([self._default, *self._compiled.values()])

    def _compile(self, version: int) -> bool:
        """Bring version ``version`` in line with its document; whether anything changed."""
        document = self._documents.get(version)
        if document is None:
            return self._compiled.pop(version, None) is not None
        if version in self._compiled:
            return False
        try:
            self._compiled[version] = st.Compiled(document, self._signals)
        except st.StrategyError as error:  # published against other signals, say
            self._refused(f"version {version}: {error}")
            return False
        return True

    def _refused(self, problem: str) -> None:
        log.warning("strategy refused by this worker: %s", problem)
        if self._metrics is not None:
            self._metrics.strategy_refused.inc()

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

    It is checked as every worker will read it: its JSON re-read and compiled. Its ``version``
    is the next number (a file may only name that one); its ``effective_from`` is ``lead_s``
    from now when the file leaves it 0, and refused when earlier than that."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    earliest = now_ms + int(lead_s * 1000)
    latest = read_published(settings).latest
    if document.version not in (0, latest + 1):
        raise st.StrategyError(f"version {document.version}: the next version is {latest + 1} "
                               "(leave version out to get it)")  # fmt: skip
    effective = document.effective_from or earliest
    if effective < earliest:
        raise st.StrategyError(f"effective_from is before {lead_s:.0f} s from now: a version "
                               "never changes what was already decided")  # fmt: skip
    document = document.model_copy(update={"version": latest + 1, "effective_from": effective})
    text = document.model_dump_json()
    if len(text.encode()) > MAX_FILE_BYTES:
        raise st.StrategyError(f"the document is larger than {MAX_FILE_BYTES} bytes as JSON")
    st.Compiled(st.parse(text, "the document as published"), signals)  # raises: one line each
    _produce(settings, document.version, text.encode())
    if read_published(settings).documents.get(document.version) != document:
        raise UserError(f"version {document.version} was published by someone else at the same "
                        "time: look at `fraudstream rules list`, then publish again")  # fmt: skip
    return document


def rollback(
    settings: Settings, signals: Signals, to: int | None = None
) -> tuple[int, st.Strategy]:
    """Publish an earlier version's document again as the next version: ``to``, or the good
    one before the version in force (``st.rollback_target``); the version restored and the
    published document."""
    versions = [st.default(), *read_published(settings).live]
    current = st.in_force(versions, int(time.time() * 1000))
    assert current is not None  # the shipped version is in force from 0
    target = st.rollback_target(versions, current) if to is None else to
    found = [s for s in versions if s.version == target]
    if not found:
        raise UserError(f"no strategy version {target}: `fraudstream rules list` shows them")
    restored = found[0].model_copy(
        update={"version": 0, "effective_from": 0, "restores": target,
                "replaces": current.version}
    )  # fmt: skip
    return target, publish(settings, restored, signals)


def revoke(settings: Settings, version: int) -> None:
    """Withdraw a published version: workers drop it at once, for every event not yet
    decided (a replay of its window then decides by the versions around it)."""
    if read_published(settings).documents.get(version) is None:
        raise UserError(f"no published version {version} to revoke")
    _produce(settings, version, None)


def _produce(settings: Settings, version: int, value: bytes | None) -> None:
    producer = Producer({**librdkafka(settings.kafka), "enable.idempotence": True})
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer.produce(settings.topic.strategy, key=f"{version:010d}", value=value,
                     on_delivery=delivered)  # fmt: skip
    if producer.flush(READ_TIMEOUT_S) or failures:
        raise UserError(f"strategy version {version} not published: "
                        f"{failures or 'no acknowledgement'}")  # fmt: skip
