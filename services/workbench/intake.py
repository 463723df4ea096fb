"""Alerts into cases: the workbench reads ``alerts`` from the offsets its own store holds
(never a consumer group's), and commits each batch's cases with the offsets they came from."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass

import msgspec
from confluent_kafka import Consumer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.core.contract import Alert
from services.core.kafka import assigned_consumer
from services.core.settings import Settings
from services.workbench.cases import ingest, next_offset

_decode = msgspec.json.Decoder(Alert).decode


@dataclass
class Intake:
    cases: int = 0  # new cases
    alerts: int = 0  # alerts read (repeats too)
    undecodable: int = 0  # messages that were no alert: skipped, counted


def consumer(settings: Settings, store: Engine) -> Consumer:
    """Every partition of ``alerts``, each from the offset after its last case."""
    with Session(store) as session:
        return assigned_consumer(
            settings, [settings.topic.alerts],
            lambda topic, partition: next_offset(session, topic, partition),
            group="fraudstream-workbench",
        )  # fmt: skip


def intake_once(
    settings: Settings, store: Engine, source: Consumer, batch: int = 1000, wait_s: float = 0.5
) -> Intake:
    """One batch from ``source`` into the store, in one transaction."""
    seen = Intake()
    by_partition: dict[int, list[tuple[int, Alert | None]]] = defaultdict(list)
    for message in source.consume(batch, wait_s):
        if message.error():
            continue
        try:
            alert: Alert | None = _decode(message.value() or b"")
            seen.alerts += 1
        except msgspec.DecodeError:
            alert = None
            seen.undecodable += 1
        partition, offset = message.partition(), message.offset()
        if partition is not None and offset is not None:  # always set on a consumed message
            by_partition[partition].append((offset, alert))
    if by_partition:
        with Session(store) as session, session.begin():
            for partition, pairs in by_partition.items():
                seen.cases += ingest(session, settings.topic.alerts, partition, pairs)
    return seen


def run(settings: Settings, store: Engine, stop: threading.Event) -> None:
    """Take alerts in until ``stop`` is set."""
    source = consumer(settings, store)
    try:
        while not stop.is_set():
            intake_once(settings, store, source)
    finally:
        source.close()
