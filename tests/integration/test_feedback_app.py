"""The feedback app under a hostile or unlucky day, as a real faust worker on a real broker and
Redis: dispositions never wait for each other, a transaction never alerted is labelled from
the lake, an error that would recur is a dead letter that `feedback redrive` re-sends, an
outage makes the app not ready and says why, and SIGTERM stops it within 10 s."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
import redis
from confluent_kafka import Producer

from models.lake.tables import Lake, connect
from models.online import layout
from services.clients.produce import generated_items
from services.clients.producer import TransactionProducer
from services.clients.reading import read_until_idle
from services.core.contract import (
    Alert,
    Chargeback,
    DeadLetter,
    Feedback,
    Label,
    Transaction,
    encode,
)  # fmt: skip
from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import ProcessRecord, free_loopback_port
from services.generator import GeneratorConfig
from tests.integration.streaming import running_stack

pytestmark = [pytest.mark.integration, pytest.mark.loop]
PARK_S, STUCK_S = 4.0, 3.0
DAY_MS = 86_400_000


def _app(settings: Settings, logs: Path) -> ProcessRecord:
    argv = [sys.executable, "-m", "services.cli", "feedback-app"]
    return processes.spawn("feedback-app", argv, logs / "feedback-app.log",
                           settings.child_environment())  # fmt: skip


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def _metric(port: int, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(line_start))


def _alert(tx: Transaction) -> Alert:
    return Alert(transaction_id=tx.transaction_id, card_id=tx.card_id, event_time=tx.event_time_ms,
                 decided_at=tx.event_time_ms, score=0.9, decision="review", reasons=[],
                 model_version="test", transaction=tx)  # fmt: skip


class _Kafka:
    """Raw alerts and dispositions, as the job and analysts send them."""

    def __init__(self, settings: Settings) -> None:
        self._settings, self._producer = settings, Producer(librdkafka(settings.kafka))

    def alert(self, tx: Transaction) -> None:
        self._send(self._settings.topic.alerts, encode(_alert(tx)), tx.card_id)

    def label(self, tx_id: str, label: Label, event_time: int | None = None) -> None:
        feedback = Feedback(transaction_id=tx_id, label=label, analyst="a",
                            time=int(time.time() * 1000), event_time=event_time)  # fmt: skip
        self._send(self._settings.topic.feedback, encode(feedback), tx_id)

    def chargeback(self, value: bytes, key: str) -> None:
        self._send(self._settings.topic.chargebacks, value, key)

    def _send(self, topic: str, value: bytes, key: str) -> None:
        self._producer.produce(topic, value, key.encode())
        assert self._producer.flush(30) == 0


@contextmanager
def _feedback_stack(tmp_path: Path, **more: object) -> Iterator[tuple[Settings, ProcessRecord]]:
    with running_stack(tmp_path / "state") as base:
        settings = base.updated({
            "feedback_metrics_port": free_loopback_port(), "feedback_park_s": PARK_S,
            "feedback_stuck_s": STUCK_S, "lake_flush_s": 1.0, **more,
        })  # fmt: skip
        app = _app(settings, tmp_path / "logs")
        try:
            port = settings.feedback.metrics_port
            processes.wait_until(lambda: _readyz(port)[0] == 200, 120, "feedback app ready", 0.5)
            yield settings, app
        finally:
            processes.stop(app)


def _cli(settings: Settings, *args: str) -> dict[str, int]:
    done = __import__("subprocess").run(
        [sys.executable, "-m", "services.cli", *args], env=settings.child_environment(),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded: dict[str, int] = json.loads(done.stdout)
    return loaded


@pytest.mark.timeout(400)
def test_dispositions_never_wait_for_each_other_and_every_transaction_is_found(
    tmp_path: Path,
) -> None:
    with _feedback_stack(tmp_path) as (settings, _):
        client = redis.Redis.from_url(settings.redis.require_url())
        tokens = settings.token.tokenizer()
        items = list(generated_items(GeneratorConfig(seed=91, customers=50), 6))
        a, b, c, w, u, late = (tokens.transaction(i.transaction) for i in items)
        crafted = msgspec.structs.replace(c, transaction_id="z}:days", card_id="c}:x{",
                                          merchant_id="shop}:label:z", device_id=None)  # fmt: skip
        with TransactionProducer(settings) as producer:  # archived: the lake knows them
            for tx in (a, b, c, w):
                producer.send(tx)
        kafka = _Kafka(settings)
        for tx in (c, crafted, w):
            kafka.alert(tx)
        processes.wait_until(
            lambda: all(client.exists(layout.alert_context(t.transaction_id))
                        for t in (c, crafted, w)), 30, "alerts remembered",
        )  # fmt: skip
        client.set(layout.card_labels(w.card_id), "not a hash")  # an error that would recur
        sent = time.monotonic()
        kafka.label(u.transaction_id, "fraud")  # never seen anywhere
        kafka.label(a.transaction_id, "fraud", a.event_time_ms)  # a chargeback: never alerted
        kafka.label(b.transaction_id, "fraud")  # its alert comes later
        kafka.label(w.transaction_id, "fraud")
        kafka.label(c.transaction_id, "fraud")
        kafka.label(crafted.transaction_id, "fraud")

        def blocked(tx: Transaction) -> bool:
            return bool(client.exists(layout.blocklist_card(tx.card_id)))

        processes.wait_until(lambda: blocked(c) and blocked(crafted), 20, "C and D applied")
        behind_unknowns_s = time.monotonic() - sent
        assert not blocked(b)  # parked, not waited for
        processes.wait_until(lambda: blocked(a), 30, "the chargeback applied from the lake")
        kafka.alert(b)
        processes.wait_until(lambda: blocked(b), 20, "B applied once its alert arrived")
        feedback_dlq = settings.topic.feedback_dlq

        def letters() -> list[DeadLetter]:
            return [msgspec.json.decode(r.value, type=DeadLetter)
                    for r in read_until_idle(settings, feedback_dlq, 1.0)]  # fmt: skip

        processes.wait_until(lambda: len(letters()) == 2, PARK_S + 30, "two dead letters")
        reasons = {json.loads(d.raw)["transaction_id"]: d.reason for d in letters()}
        assert "WRONGTYPE" in reasons[w.transaction_id]
        assert reasons[u.transaction_id].startswith("no transaction known")
        client.delete(layout.card_labels(w.card_id))  # the causes fixed: W's key, U archived
        late = msgspec.structs.replace(late, transaction_id=u.transaction_id,
                                       event_time=int(time.time() * 1000) - 3_600_000)  # fmt: skip
        with TransactionProducer(settings) as producer:  # recent: within the default lookup
            producer.send(late)
        processes.wait_until(lambda: Lake(settings.lake_path).rows("transactions") >= 5, 30,
                             "U archived")  # fmt: skip
        assert _cli(settings, "feedback", "redrive", "--json")["sent"] == 2
        processes.wait_until(lambda: blocked(w), 30, "W redriven")
        processes.wait_until(lambda: blocked(late), 30, "U redriven, found in the lake")
        assert _cli(settings, "feedback", "redrive", "--json")["sent"] == 0  # once only
        port = settings.feedback.metrics_port
        assert _metric(port, "fraudstream_feedback_redis_retries") == 0  # never an outage
        processes.wait_until(lambda: Lake(settings.lake_path).rows("labels") >= 6, 30,
                             "labels in the lake")  # fmt: skip
        rows = connect(Lake(settings.lake_path)).execute(
            "SELECT transaction_id, alerted FROM labels").fetchall()  # fmt: skip
    assert behind_unknowns_s < 15  # on cdc8e54 each unknown one held the rest for 10 s
    alerted = dict(rows)
    assert (alerted[a.transaction_id], alerted[c.transaction_id]) == (False, True)
    assert set(alerted) == {tx.transaction_id for tx in (a, b, c, w, u, crafted)}


@pytest.mark.timeout(300)
def test_a_chargeback_on_its_topic_labels_an_approved_transaction_and_moves_its_merchant(
    tmp_path: Path,
) -> None:
    with _feedback_stack(tmp_path) as (settings, _):
        client = redis.Redis.from_url(settings.redis.require_url())
        tokens = settings.token.tokenizer()
        tx = tokens.transaction(next(generated_items(GeneratorConfig(seed=93), 1)).transaction)
        with TransactionProducer(settings) as producer:  # approved: archived, never alerted
            producer.send(tx)
        risk = layout.merchant_days(tx.merchant_id)
        day = f"f{tx.event_time_ms // DAY_MS}"
        assert client.hget(risk, day) is None  # the negative control: no fraud counted yet
        kafka = _Kafka(settings)
        received = tx.event_time_ms + 20 * DAY_MS
        chargeback = Chargeback(transaction_id=tx.transaction_id, event_time=tx.event_time_ms,
                                reason_code="10.4", received_at=received)  # fmt: skip
        kafka.chargeback(b'{"transaction_id": "x"}', "x")  # not a chargeback: a dead letter
        kafka.chargeback(encode(chargeback), tx.transaction_id)
        processes.wait_until(lambda: client.hget(risk, day) == b"1", 60,
                             "the merchant's fraud counted")  # fmt: skip
        assert client.exists(layout.blocklist_card(tx.card_id))
        processes.wait_until(lambda: Lake(settings.lake_path).rows("labels") >= 1, 30,
                             "the label in the lake")  # fmt: skip
        label = connect(Lake(settings.lake_path)).execute(
            "SELECT label, analyst, alerted, labelled_at, note FROM labels").fetchall()  # fmt: skip
        dlq = settings.topic.feedback_dlq
        letters = [msgspec.json.decode(r.value, type=DeadLetter)
                   for r in read_until_idle(settings, dlq, 1.0)]  # fmt: skip
        forwarded = _metric(settings.feedback.metrics_port,
                            "fraudstream_feedback_chargebacks_forwarded_total")  # fmt: skip
    assert label == [("fraud", "chargebacks", False, chargeback.received_ms, "chargeback 10.4")]
    assert [(d.source_topic, d.field) for d in letters] == [(settings.topic.chargebacks,
                                                              "event_time")]  # fmt: skip
    assert forwarded == 1


@pytest.mark.timeout(400)
def test_an_outage_is_waited_out_visibly_and_sigterm_stops_the_app_in_10_s(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("the lake cannot be created under a file")
    with _feedback_stack(tmp_path, lake_dir=blocker / "lake") as (settings, app):
        state = stack.status(settings)
        assert state is not None
        redis_pid = next(p for p in state.processes if p.name == "redis").pid
        client = redis.Redis.from_url(settings.redis.require_url())
        tx = next(generated_items(GeneratorConfig(seed=92), 1)).transaction
        kafka = _Kafka(settings)
        kafka.alert(tx)
        processes.wait_until(lambda: client.exists(layout.alert_context(tx.transaction_id)) == 1,
                             30, "the alert remembered")  # fmt: skip
        port = settings.feedback.metrics_port
        os.kill(redis_pid, signal.SIGSTOP)  # Redis black-holed: connections hang, no answer
        try:
            kafka.label(tx.transaction_id, "fraud")
            processes.wait_until(lambda: _readyz(port)[0] == 503, 60, "not ready")
            why = _readyz(port)[1]
            stuck = _metric(port, 'fraudstream_feedback_stuck_seconds{agent="alert-feedback"}')
            time.sleep(1.5)  # the event loop keeps its timers: the gauge moves on
            later = _metric(port, 'fraudstream_feedback_stuck_seconds{agent="alert-feedback"}')
            started = time.monotonic()
            os.kill(app.pid, signal.SIGTERM)  # Redis hung, the lake unwritable
            processes.wait_until(lambda: not processes.is_running(app), 15, "the app stopped")
            stop_s = time.monotonic() - started
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        blocker.unlink()
        again = _app(settings, tmp_path / "logs")  # nothing lost: applied after the restart
        try:
            processes.wait_until(lambda: client.exists(layout.blocklist_card(tx.card_id)) == 1,
                                 120, "the disposition applied after the restart")  # fmt: skip
        finally:
            processes.stop(again)
    assert "alert-feedback stuck on alert-feedback 0@0" in why, why
    assert later > max(stuck, STUCK_S)  # on cdc8e54 a blocking Redis call froze the loop
    assert stop_s < 10.0
