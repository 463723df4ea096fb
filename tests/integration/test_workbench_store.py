"""The case store on SQLite and on a real PostgreSQL: the schema from the Alembic migrations,
and an alert becomes a case exactly once, whatever is replayed or cut short."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from confluent_kafka import Producer
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.orm import Session

from services.core.contract import Alert, LabelRecord, Transaction
from services.core.kafka_config import librdkafka
from services.devstack import processes
from services.devstack.processes import free_loopback_port
from services.workbench.cases import (
    Base,
    Case,
    EarlyLabel,
    Status,
    case_of,
    close_labelled,
    ingest,
    next_offset,
)
from services.workbench.intake import Intake, consumer, intake_once
from services.workbench.store import default_url, engine, migrate
from tests.integration.streaming import running_stack

POSTGRES = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the OS package on a loopback port, run as its own user (it
    refuses root, and cannot enter pytest's owner-only folders) and stopped by its PID."""
    assert (POSTGRES / "postgres").exists(), "apt-get install postgresql (.ci/run does)"
    folder = Path(tempfile.mkdtemp(prefix="fraudstream-postgres-"))
    shutil.chown(folder, "postgres", "postgres")
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]
    data = folder / "data"
    subprocess.run([*as_postgres, str(POSTGRES / "initdb"), "-D", str(data), "-U", "fraud",
                    "--auth=trust"], check=True, capture_output=True, timeout=120)  # fmt: skip
    port = free_loopback_port()
    record = processes.spawn("postgres", [*as_postgres, str(POSTGRES / "postgres"), "-D",
                             str(data), "-p", str(port), "-k", str(folder), "-c",
                             "listen_addresses=127.0.0.1"], folder / "postgres.log")  # fmt: skip
    try:
        processes.wait_until(lambda: processes.port_open(port), 60, "postgres")
        yield f"postgresql+psycopg://fraud@127.0.0.1:{port}/postgres"
    finally:
        processes.stop(record)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database for each test."""
    if request.param == "sqlite":
        return default_url(tmp_path)
    server: str = request.getfixturevalue("postgres")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


def _alert(i: int, transaction: str | None = None, amount: float = 100.0) -> Alert:
    tx = Transaction(
        transaction_id=transaction or f"t{i}", event_time=1_772_323_200_000 + i * 1_000,
        card_id="tok_c1", customer_id="tok_u1", merchant_id="m1", merchant_category="5411",
        amount=amount, currency="USD", country="US", channel="card_present",
    )  # fmt: skip
    return Alert(transaction_id=tx.transaction_id, card_id="tok_c1", event_time=1_772_323_200_000,
                 decided_at=1_772_323_200_500 + i, score=0.8, decision="review",
                 reasons=["amount_spike"], model_version="v0001", transaction=tx)  # fmt: skip


def test_expected_loss_is_in_dollars_whatever_the_currency(tmp_path: Path) -> None:
    """The queue ranks across currencies: 15,000 yen at 0.8 is 80 dollars at risk, not 12,000."""
    alert = _alert(0)
    yen = msgspec.structs.replace(alert.transaction, amount=15_000.0, currency="JPY")
    case = case_of(msgspec.structs.replace(alert, transaction=yen))
    assert case.expected_loss == pytest.approx(80.0)


def _label(transaction: str, label: str, offset_alerted: bool = True) -> LabelRecord:
    return LabelRecord(transaction_id=transaction, label=label, analyst="carl",  # type: ignore[arg-type]
                       labelled_at=1_772_323_260_000, event_time=1_772_323_200_000,
                       card_id="tok_c1", customer_id="tok_u1", merchant_id="m1",
                       alerted=offset_alerted)  # fmt: skip


def test_a_label_from_elsewhere_closes_its_case_in_either_order_once(url: str) -> None:
    """The ``feedback`` command (or any tool) labels an alerted transaction: its case closes
    under that analyst, whether the label is read after its alert or before; a replayed label
    changes nothing, a later different one (a chargeback) becomes the outcome, and a label of
    a transaction that was never alerted keeps nothing."""
    store = engine(url)
    with Session(store) as session, session.begin():
        ingest(session, "alerts", 0, [(0, _alert(0)), (1, _alert(1))])
        labels = [(0, _label("t0", "legit")), (1, _label("t9", "fraud")),
                  (2, _label("tx-never-alerted", "fraud", offset_alerted=False))]  # fmt: skip
        assert close_labelled(session, "labels", 0, labels) == 1
    with Session(store) as session, session.begin():
        assert close_labelled(session, "labels", 0, labels) == 0  # a replay
        assert ingest(session, "alerts", 0, [(2, _alert(9))]) == 1  # t9's alert, after its label
        assert close_labelled(session, "labels", 0, [(3, _label("t0", "fraud"))]) == 0
    with Session(store) as session:
        rows = session.execute(select(Case.transaction_id, Case.status, Case.outcome,
                                      Case.closed_by).order_by(Case.id)).all()  # fmt: skip
        assert [tuple(r) for r in rows] == [
            ("t0", Status.CLOSED, "fraud", "carl"), ("t1", Status.OPEN, None, None),
            ("t9", Status.CLOSED, "fraud", "carl"),
        ]  # fmt: skip
        assert session.scalars(select(EarlyLabel)).all() == []  # t9's was used, none kept
        assert next_offset(session, "labels", 0) == 4
    store.dispose()


def _cases(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Case)) or 0)


def test_the_schema_is_the_migrations_and_migrating_again_changes_nothing(url: str) -> None:
    """The migrations make exactly the models' schema (Alembic's own comparison finds no
    difference), and migrating again at the next start changes nothing."""
    store = engine(url)
    tables = set(inspect(store).get_table_names())
    assert {"cases", "users", "alert_offsets", "audit_log", "backtests"} <= tables
    with store.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    migrate(url)  # at every start: idempotent
    assert set(inspect(store).get_table_names()) == tables
    store.dispose()


def test_an_alert_becomes_a_case_exactly_once(url: str) -> None:
    store = engine(url)
    batch = [(offset, _alert(offset)) for offset in range(5)]
    with Session(store) as session, session.begin():
        assert ingest(session, "alerts", 0, batch) == 5
    with Session(store) as session, session.begin():  # the same batch again: a replay
        assert ingest(session, "alerts", 0, batch) == 0
        # Overlapping: 3 and 4 again, 5 new, 6 a repeat of t1's alert at a later offset.
        later = [(3, _alert(3)), (4, _alert(4)), (5, _alert(5)), (6, _alert(9, "t1"))]
        assert ingest(session, "alerts", 0, later) == 1
    with Session(store) as session:
        assert _cases(session) == 6
        assert next_offset(session, "alerts", 0) == 7
        assert next_offset(session, "alerts", 1) == 0  # another partition: from its start
        case = session.scalars(select(Case).where(Case.transaction_id == "t2")).one()
        assert case.expected_loss == pytest.approx(80.0)
        assert case.card_token == "tok_c1"
    store.dispose()


def test_a_transaction_cut_short_leaves_neither_cases_nor_offset(url: str) -> None:
    """The case and the offset commit together: a crash between them never makes a case that
    a restart would make again, nor skip an alert that never became one."""
    store = engine(url)

    def crash() -> None:
        with Session(store) as session, session.begin():
            ingest(session, "alerts", 0, [(0, _alert(0)), (1, _alert(1))])
            raise RuntimeError("the process dies before its commit")

    with pytest.raises(RuntimeError):
        crash()
    with Session(store) as session:
        assert _cases(session) == 0
        assert next_offset(session, "alerts", 0) == 0
    store.dispose()


def test_alerts_from_the_broker_become_cases_once_across_restarts_and_replays(
    tmp_path: Path,
) -> None:
    """Read, stopped, started again, fed the same alerts again: each transaction one case; a
    message that is no alert is counted and passed, never a crash or a stall."""
    with running_stack(tmp_path / "state") as settings:
        store = engine(default_url(tmp_path))
        producer = Producer(librdkafka(settings.kafka))

        def send(alerts: list[Alert], junk: bytes | None = None) -> None:
            for alert in alerts:
                producer.produce(settings.topic.alerts, msgspec.json.encode(alert),
                                 key=alert.card_id)  # fmt: skip
            if junk is not None:
                producer.produce(settings.topic.alerts, junk, key=b"tok_c1")
            assert producer.flush(10) == 0

        def take(until_alerts: int) -> Intake:
            total = Intake()
            source = consumer(settings, store)
            try:
                deadline = time.monotonic() + 30
                while total.alerts + total.undecodable < until_alerts:
                    assert time.monotonic() < deadline, f"only {total} within 30 s"
                    got = intake_once(settings, store, source, wait_s=0.2)
                    total.cases += got.cases
                    total.alerts += got.alerts
                    total.undecodable += got.undecodable
            finally:
                source.close()
            return total

        send([_alert(i) for i in range(10)], junk=b"\xff not an alert")
        first = take(11)
        assert (first.cases, first.alerts, first.undecodable) == (10, 10, 1)
        send([_alert(i) for i in range(5, 15)])  # a replay upstream: 5 seen, 5 new
        second = take(10)  # a new consumer: resumes after the last case, reads only these
        assert (second.cases, second.alerts, second.undecodable) == (5, 10, 0)
        with Session(store) as session:
            assert _cases(session) == 15
        store.dispose()


def test_the_intake_outlives_missing_topics_and_takes_alerts_once_they_exist(
    tmp_path: Path,
) -> None:
    """A workbench started before its topics exist (a fresh install) says why no alert comes
    in and keeps trying; once the topics are there, alerts become cases without a restart."""
    from services.core.kafka import create_topics
    from services.workbench.intake import Health, run

    with running_stack(tmp_path / "state") as stack:
        settings = stack.updated({"topic_alerts": "late-alerts", "topic_labels": "late-labels"})
        store = engine(default_url(tmp_path))
        stop, health = threading.Event(), Health()
        taking = threading.Thread(target=run, args=(settings, store, stop, health), daemon=True)
        taking.start()
        try:
            processes.wait_until(lambda: "late-alerts" in health.error, 30, "the intake's error")
            assert health.failing_since > 0
            assert taking.is_alive()
            create_topics(settings)
            producer = Producer(librdkafka(settings.kafka))
            producer.produce("late-alerts", msgspec.json.encode(_alert(0)), key=b"tok_c1")
            assert producer.flush(10) == 0

            def taken() -> bool:
                with Session(store) as session:
                    return _cases(session) == 1

            processes.wait_until(taken, 60, "the alert taken in after the topics came")
            assert health.error == ""
        finally:
            stop.set()
            taking.join(30)
        assert not taking.is_alive()
        store.dispose()
