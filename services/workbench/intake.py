"""Alerts into cases, labels onto them: the workbench reads ``alerts`` and ``labels`` from the
offsets its own store holds (never a consumer group's), and commits each batch's cases with
the offsets they came from."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import Consumer
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from services.core.contract import Alert, LabelRecord
from services.core.kafka import assigned_consumer
from services.core.settings import Settings
from services.workbench.cases import close_labelled, ingest, next_offset

log = logging.getLogger(__name__)
INTAKE_LOCK = 0x6672_6175_6400_0002  # any constant of this application's own
MAX_PAUSE_S = 30.0
_alert = msgspec.json.Decoder(Alert).decode
_label = msgspec.json.Decoder(LabelRecord).decode


@dataclass
class Intake:
    cases: int = 0  # new cases
    alerts: int = 0  # alerts read (repeats too)
    closed: int = 0  # cases closed by a label from outside the workbench
    undecodable: int = 0  # messages that were no alert or label: skipped, counted


def consumer(settings: Settings, store: Engine) -> Consumer:
    """Every partition of ``alerts`` and ``labels``, each from the offset after the last one
    taken in."""
    with Session(store) as session:
        return assigned_consumer(
            settings, [settings.topic.alerts, settings.topic.labels],
            lambda topic, partition: next_offset(session, topic, partition),
            group="fraudstream-workbench",
        )  # fmt: skip


def intake_once(
    settings: Settings, store: Engine, source: Consumer, batch: int = 1000, wait_s: float = 0.5
) -> Intake:
    """One batch from ``source`` into the store, in one transaction: alerts first, so a
    label read with its alert closes the case made now."""
    seen = Intake()
    batches: dict[tuple[str, int], list[tuple[int, Any]]] = defaultdict(list)
    for message in source.consume(batch, wait_s):
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if message.error() or topic is None or partition is None or offset is None:
            continue
        decode = _alert if topic == settings.topic.alerts else _label
        try:
            item = decode(message.value() or b"")
            seen.alerts += topic == settings.topic.alerts
        except msgspec.DecodeError:
            item = None
            seen.undecodable += 1
        batches[topic, partition].append((offset, item))
    if batches:
        with Session(store) as session, session.begin():
            one_at_a_time(session)
            alerts_first = sorted(batches.items(), key=lambda i: i[0][0] != settings.topic.alerts)
            for (topic, partition), pairs in alerts_first:
                if topic == settings.topic.alerts:
                    seen.cases += ingest(session, topic, partition, pairs)
                else:
                    seen.closed += close_labelled(session, topic, partition, pairs)
    return seen


def one_at_a_time(session: Session) -> None:
    """On PostgreSQL, replicas take batches in turn (a transaction-scoped lock): each reads
    the offsets the last committed, so none inserts a case twice, and case ids are committed
    in the order they are given (the live queue streams by id)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INTAKE_LOCK})


@dataclass
class Health:
    """What the page says about the intake: the last error, and since when it fails."""

    error: str = ""
    failing_since: float = 0.0  # epoch seconds; 0: working


def run(settings: Settings, store: Engine, stop: threading.Event, health: Health) -> None:
    """Take alerts and labels in until ``stop`` is set. A failure (the broker, the database,
    the topics not there yet) is logged and shown, and the intake starts again from the
    stored offsets after a growing pause: it never stops for good."""
    pause = 1.0
    while not stop.is_set():
        try:
            source = consumer(settings, store)
            try:
                if not source.assignment():
                    raise RuntimeError(f"no partitions of {settings.topic.alerts} yet")
                while not stop.is_set():
                    intake_once(settings, store, source)
                    health.error, health.failing_since, pause = "", 0.0, 1.0
            finally:
                source.close()
        except Exception as error:  # any cause: shown, retried, never fatal
            log.warning("alert intake: %s: again in %.0f s", error, pause)
            health.error = f"{type(error).__name__}: {error}"[:300]
            health.failing_since = health.failing_since or time.time()
            stop.wait(pause)
            pause = min(pause * 2, MAX_PAUSE_S)
