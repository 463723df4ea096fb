"""Publish transactions: generated, or replayed from a CSV or JSON lines, to Kafka or a file.

Labels never travel in the event: they go to a side CSV (transaction_id, is_fraud, pattern)
for evaluation and training. Sending is paced to a target rate by sleeping between small
batches against a monotonic schedule, so a slow moment is caught up rather than lost.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from services.clients.producer import TransactionProducer
from services.core.card_csv import read_card_csv
from services.core.contract import InvalidEvent, Transaction, decode_transaction, encode
from services.core.errors import UserError
from services.core.mapping import MappedFile
from services.core.settings import Settings
from services.generator import GeneratorConfig, generate

_PACE_EVERY = 64  # events between pacing checks: fine enough for 10 ms precision at 5k/s


@dataclass(frozen=True)
class Item:
    """One event to send and its ground truth (None when the source has no labels)."""

    transaction: Transaction
    is_fraud: bool | None
    pattern: str | None = None


@dataclass
class ProduceSummary:
    """What a produce run did; ``--json`` prints exactly these fields."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    rejected: int = 0
    fraud: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    first_errors: list[str] | None = None


class Sink(Protocol):
    """Where events go: ``send`` one, ``close`` returns (delivered, failed, errors)."""

    def send(self, transaction: Transaction) -> None: ...

    def close(self) -> tuple[int, int, list[str]]: ...


class KafkaSink:
    def __init__(self, settings: Settings, topic: str | None) -> None:
        self._producer = TransactionProducer(settings, topic)
        self.send = self._producer.send

    def close(self) -> tuple[int, int, list[str]]:
        report = self._producer.flush()
        return report.delivered, report.failed, report.errors


class FileSink:
    """JSON lines, one transaction per line: the generator's offline output for training."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[bytes] = path.open("wb")
        self._count = 0

    def send(self, transaction: Transaction) -> None:
        self._handle.write(encode(transaction) + b"\n")
        self._count += 1

    def close(self) -> tuple[int, int, list[str]]:
        self._handle.close()
        return self._count, 0, []


def generated_items(config: GeneratorConfig, count: int) -> Iterator[Item]:
    """The generator's events with their labels."""
    for labelled in generate(config, count):
        yield Item(labelled.transaction, labelled.is_fraud, labelled.pattern)


def csv_items(path: Path, rejected: Callable[[int, InvalidEvent], None]) -> Iterator[Item]:
    """A CSV replay's events; invalid rows go to ``rejected`` with their line number."""
    for row in read_card_csv(path):
        if isinstance(row.event, InvalidEvent):
            rejected(row.line, row.event)
        else:
            yield Item(row.event, row.is_fraud, "labelled" if row.is_fraud else None)


def mapped_items(
    path: Path, mapped: MappedFile, rejected: Callable[[int, InvalidEvent], None]
) -> Iterator[Item]:
    """A producer's own CSV or JSON-lines file, through its mapping; invalid rows go to
    ``rejected`` with their line number."""
    for row in mapped.read(path):
        if isinstance(row.event, InvalidEvent):
            rejected(row.line, row.event)
        else:
            yield Item(row.event, row.is_fraud, "labelled" if row.is_fraud else None)


def jsonl_items(path: Path, rejected: Callable[[int, InvalidEvent], None]) -> Iterator[Item]:
    """Transactions as JSON lines (what ``--out`` writes); invalid lines go to ``rejected``."""
    if not path.is_file():
        raise UserError(f"{path.name}: no such file")
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            event = decode_transaction(line.strip())
            if isinstance(event, InvalidEvent):
                rejected(number, event)
            else:
                yield Item(event, None)


def run(
    items: Iterable[Item],
    sink: Sink,
    *,
    rate: float,
    labels: Path | None,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> ProduceSummary:
    """Send every item at ``rate`` events/s (0: as fast as possible); write labels if asked."""
    summary = ProduceSummary()
    started = time.monotonic()
    with ExitStack() as stack:
        label_writer = None
        if labels is not None:
            labels.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(labels.open("w", newline=""))
            label_writer = csv.writer(handle)
            label_writer.writerow(["transaction_id", "is_fraud", "pattern"])
        for item in items:
            sink.send(item.transaction)
            summary.sent += 1
            if item.is_fraud:
                summary.fraud += 1
            if label_writer is not None and item.is_fraud is not None:
                tx_id = item.transaction.transaction_id
                label_writer.writerow([tx_id, int(item.is_fraud), item.pattern or ""])
            if summary.sent % _PACE_EVERY == 0:
                on_progress(summary.sent)
                if rate > 0:
                    ahead = summary.sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        summary.delivered, summary.failed, errors = sink.close()
    on_progress(summary.sent)
    summary.seconds = round(time.monotonic() - started, 3)
    summary.events_per_s = round(summary.sent / summary.seconds, 1) if summary.seconds else 0.0
    summary.first_errors = errors or None
    return summary
