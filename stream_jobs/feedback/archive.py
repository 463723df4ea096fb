"""The lake: every transaction, decision and applied disposition, read in batches with
librdkafka.

A thread of the feedback app rather than a faust agent: faust spends about 170 µs of CPU per
message on its per-message asyncio machinery (``benchmarks/lake.py``), more than the job
spends deciding it. The lake's manifest is the archive's only offset store: each partition
is read from just after the last offset the manifest holds, so there is no consumer group to
join and nothing to commit, and a batch written before a crash is never written again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException

from models.lake import tables as lk
from services.core.contract import (
    Decision,
    InvalidEvent,
    LabelRecord,
    decode_or_none,
    decode_transaction,
)
from services.core.kafka import assigned_consumer, topic_epochs
from services.core.lag import LagProbe
from services.core.settings import Settings
from services.core.signals import Signals, load_signals
from services.core.throttled_log import ThrottledLog
from services.core.tokens import Tokenizer
from stream_jobs.feedback.metrics import FeedbackMetrics
from stream_jobs.feedback.writer import BATCH_ROWS, RETRY_S, append_until_written

log = logging.getLogger(__name__)
_decisions = msgspec.json.Decoder(Decision)
_labels = msgspec.json.Decoder(LabelRecord)
STOP_WAIT_S = 5.0  # what a stop waits for the thread (a write to a dead disk is abandoned)
RowOf = Callable[[bytes], dict[str, Any] | None]


def transaction_rows(tokens: Tokenizer, signals: Signals) -> RowOf:
    """Rows of the transactions the job decides: valid, their attributes as declared; any
    raw card number and personal attribute of a foreign producer tokenized."""

    def row(raw: bytes) -> dict[str, Any] | None:
        tx = decode_transaction(raw)  # an invalid one is in transactions.dlq already
        if isinstance(tx, InvalidEvent) or (tx.attributes and signals.check(tx)):
            return None
        return lk.transaction_row(tokens.foreign(tx, signals.personal))

    return row


def decision_row(raw: bytes) -> dict[str, Any] | None:
    decision = decode_or_none(_decisions, raw)
    return None if decision is None else lk.decision_row(decision)


def label_row(raw: bytes) -> dict[str, Any] | None:
    record = decode_or_none(_labels, raw)
    return None if record is None else lk.label_row(record)


class Archiver:
    """Runs until :meth:`stop`."""

    def __init__(self, settings: Settings, lake: lk.Lake, metrics: FeedbackMetrics,
                 lag: LagProbe) -> None:  # fmt: skip
        self._settings, self._lake, self._metrics, self._lag = settings, lake, metrics, lag
        self._tables: dict[str, tuple[lk.Table, RowOf]] = {
            settings.topic.transactions: (
                "transactions",
                transaction_rows(settings.token.tokenizer(), load_signals(settings.model.signals)),
            ),
            settings.topic.decisions: ("decisions", decision_row),
            settings.topic.labels: ("labels", label_row),
        }
        self._epochs: dict[str, str] = {}
        self._warnings = ThrottledLog(log)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lake-archive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=STOP_WAIT_S)

    def _start_at(self, topic: str, partition: int) -> int:
        table = self._tables[topic][0]
        after = self._lake.next_offset(table, topic, partition, self._epochs[topic])
        return OFFSET_BEGINNING if after is None else after

    def _run(self) -> None:
        warnings = self._warnings
        while not self._stop.is_set():
            try:
                self._archive()
            except KafkaException as error:  # the broker unreachable at start, say
                warnings.warning("kafka", "archive: %s; retrying every %.0f s", error, RETRY_S)
                self._stop.wait(RETRY_S)
            except Exception as error:  # a disk or a bug must not end the archive silently
                log.debug("archive failed", exc_info=True)
                warnings.warning(type(error).__name__, "archive failed (%s: %s); resuming from "
                                 "the lake's manifest", type(error).__name__, error)  # fmt: skip
                self._metrics.lake_errors.labels("archive").inc()
                self._stop.wait(RETRY_S)

    def _archive(self) -> None:
        # On every (re)connect: a broker that came back empty is a new epoch, read from its start.
        self._epochs = topic_epochs(self._settings, list(self._tables))
        consumer = assigned_consumer(self._settings, list(self._tables), self._start_at,
                                     group="fraudstream-archive")  # fmt: skip
        try:
            while not self._stop.is_set():
                for topic, records in self._gather(consumer).items():
                    if records:  # the manifest is the offset store: nothing to acknowledge
                        with self._metrics.processing.labels("archive").time():
                            append_until_written(self._lake, self._tables[topic][0], records,
                                                 self._metrics, self._stop)  # fmt: skip
                        self._lag.processed((r.topic, r.partition, r.offset) for r in records)
        finally:
            consumer.close()

    def _gather(self, consumer: Consumer) -> dict[str, list[lk.Sourced]]:
        """What arrives within FRAUDSTREAM_LAKE_FLUSH_S, at most BATCH_ROWS records."""
        batch: dict[str, list[lk.Sourced]] = {topic: [] for topic in self._tables}
        deadline, count = time.monotonic() + self._settings.lake.flush_s, 0
        while count < BATCH_ROWS and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for message in consumer.consume(BATCH_ROWS - count, timeout=min(left, 0.5)):
                topic = message.topic()
                if message.error() or topic is None:  # a broker or login lost mid-run: said
                    self._warnings.warning("consume", "archive: %s", message.error())
                    continue
                table, to_row = self._tables[topic]
                row = to_row(message.value() or b"")
                if row is None:
                    self._metrics.lake_skipped.labels(table).inc()
                    continue
                where = (topic, message.partition() or 0, message.offset() or 0)
                batch[topic].append(lk.Sourced(*where, row, self._epochs[topic]))
                count += 1
        return batch
