"""The case store: alerts as cases, analysts, dispositions and the audit log, in SQLite by
default or PostgreSQL for a team, through SQLAlchemy (schema changes through Alembic:
``services/workbench/migrations``).

An alert becomes a case exactly once: the alert's Kafka offset is committed in the same
database transaction as its case, and a transaction id makes at most one case, so a replay or
a restart never makes a second. A label applied by the pipeline (``labels``: an outcome sent
from anywhere, the ``feedback`` command, another tool) closes its open case the same way, in
whichever order the two topics are read."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from services.core.contract import Alert, LabelRecord
from services.core.currency import to_usd

T = TypeVar("T")


def _values(kind: type[enum.StrEnum]) -> list[str]:
    return [member.value for member in kind]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: DateTime(timezone=True),
    }


class Role(enum.StrEnum):
    ANALYST = "analyst"
    LEAD = "lead"  # also publishes and rolls back strategies


class Status(enum.StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    CLOSED = "closed"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=16, values_callable=_values)
    )
    created_at: Mapped[datetime]


class Case(Base):
    """One alerted transaction; the card is its token, never its number."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(128), unique=True)
    card_token: Mapped[str] = mapped_column(String(128), index=True)
    event_time: Mapped[int] = mapped_column(BigInteger)
    alerted_at: Mapped[int] = mapped_column(BigInteger, index=True)
    amount: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(3))
    merchant_id: Mapped[str] = mapped_column(String(128), index=True)
    merchant_category: Mapped[str] = mapped_column(String(8))
    score: Mapped[float] = mapped_column(Float)
    expected_loss: Mapped[float] = mapped_column(Float, index=True)  # score x amount in USD
    decision: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[str]]
    model_version: Mapped[str] = mapped_column(String(64))
    strategy_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[Status] = mapped_column(
        Enum(Status, native_enum=False, length=16, values_callable=_values),
        default=Status.OPEN,
        index=True,
    )
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str | None] = mapped_column(String(16))
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(128))  # an analyst's name


class EarlyLabel(Base):
    """A label of an alerted transaction read before its alert: it closes the case when the
    alert comes."""

    __tablename__ = "early_labels"

    transaction_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    label: Mapped[str] = mapped_column(String(16))
    analyst: Mapped[str] = mapped_column(String(128))
    labelled_at: Mapped[int] = mapped_column(BigInteger)


class Offset(Base):
    """The next alert offset of each partition, committed with the cases it made."""

    __tablename__ = "alert_offsets"
    __table_args__ = (UniqueConstraint("topic", "partition"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    next_offset: Mapped[int] = mapped_column(BigInteger)


class Audit(Base):
    """Who did what: every disposition, list change and publication, by a signed-in user."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]]


class Backtest(Base):
    """A candidate strategy replayed over the lake from the strategy page, against the
    version in force: running until it has a report (a self-contained HTML page) or an error."""

    __tablename__ = "backtests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    first_day: Mapped[str] = mapped_column(String(10))
    end_day: Mapped[str] = mapped_column(String(10))  # exclusive
    candidate: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    report: Mapped[str | None] = mapped_column(Text)


def case_of(alert: Alert) -> Case:
    tx = alert.transaction
    return Case(
        transaction_id=alert.transaction_id,
        card_token=alert.card_id,
        event_time=alert.event_time,
        alerted_at=alert.decided_at,
        amount=tx.amount,
        currency=tx.currency,
        merchant_id=tx.merchant_id,
        merchant_category=tx.merchant_category,
        score=alert.score,
        expected_loss=alert.score * to_usd(tx.amount, tx.currency),
        decision=alert.decision,
        reasons=list(alert.reasons),
        model_version=alert.model_version,
        strategy_version=alert.strategy_version,
        status=Status.OPEN,
    )


def ingest(
    session: Session, topic: str, partition: int, batch: Sequence[tuple[int, Alert | None]]
) -> int:
    """Cases for a batch of one partition's alerts (offset, alert; None: a message that was no
    alert), and the partition's next offset, in the caller's transaction; the number of new
    cases. An offset behind the committed one, or a transaction with a case, makes none."""
    alerts = [alert for alert in _fresh(session, topic, partition, batch) if alert is not None]
    ids = {alert.transaction_id for alert in alerts}
    known = set(session.scalars(select(Case.transaction_id).where(Case.transaction_id.in_(ids))))
    early = {e.transaction_id: e for e in session.scalars(
        select(EarlyLabel).where(EarlyLabel.transaction_id.in_(ids - known)))}  # fmt: skip
    made = 0
    for alert in alerts:
        if alert.transaction_id not in known:
            case = case_of(alert)
            if (label := early.pop(alert.transaction_id, None)) is not None:
                _close(case, label.label, label.analyst, label.labelled_at)
                session.delete(label)
            session.add(case)
            known.add(alert.transaction_id)
            made += 1
    return made


def close_labelled(
    session: Session, topic: str, partition: int, batch: Sequence[tuple[int, LabelRecord | None]]
) -> int:
    """Close the open cases of a batch of one partition's labels, as ``ingest`` makes cases;
    the number closed. A closed case takes a later, different label as its outcome; a label
    of an alerted transaction without a case yet is kept for it."""
    labels = {r.transaction_id: r for r in _fresh(session, topic, partition, batch) if r}
    cases = {c.transaction_id: c for c in session.scalars(
        select(Case).where(Case.transaction_id.in_(labels)).with_for_update())}  # fmt: skip
    closed = 0
    for transaction, record in labels.items():
        case = cases.get(transaction)
        if case is not None and case.status is not Status.CLOSED:
            _close(case, record.label, record.analyst, record.labelled_at)
            closed += 1
        elif case is not None and case.outcome != record.label:  # a later word: a chargeback
            case.outcome, case.closed_by = record.label, record.analyst
        elif case is None and record.alerted:
            early = EarlyLabel(transaction_id=transaction, label=record.label,
                               analyst=record.analyst, labelled_at=record.labelled_at)  # fmt: skip
            session.merge(early)
    return closed


def _close(case: Case, label: str, analyst: str, at_ms: int) -> None:
    case.status, case.outcome, case.closed_by = Status.CLOSED, label, analyst
    case.closed_at = datetime.fromtimestamp(at_ms / 1000, UTC)


def _fresh(session: Session, topic: str, partition: int, batch: Sequence[tuple[int, T]]) -> list[T]:
    """The batch's messages not taken in before, and the partition's offset moved past them
    (in the caller's transaction)."""
    committed = next_offset(session, topic, partition)
    fresh = [(offset, item) for offset, item in batch if offset >= committed]
    if not fresh:
        return []
    row = session.scalars(
        select(Offset).where(Offset.topic == topic, Offset.partition == partition)
    ).one_or_none()
    last = max(offset for offset, _ in fresh) + 1
    if row is None:
        session.add(Offset(topic=topic, partition=partition, next_offset=last))
    else:
        row.next_offset = last
    return [item for _, item in fresh]


def next_offset(session: Session, topic: str, partition: int) -> int:
    """Where the workbench resumes reading a partition of alerts (0: from the beginning)."""
    found = session.scalars(
        select(Offset.next_offset).where(Offset.topic == topic, Offset.partition == partition)
    ).one_or_none()
    return found or 0


def now() -> datetime:
    return datetime.now(UTC)
