"""The feedback loop with real parts: broker, Redis, scoring service, the PyFlink job and the
faust worker. An analyst marks an alert as fraud; the card's next transaction is declined."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from confluent_kafka import Producer

from models.online import layout
from services.clients.produce import generated_items
from services.clients.producer import TransactionProducer
from services.clients.reading import read_until_idle
from services.core.contract import Alert, DeadLetter, Feedback, Transaction, encode
from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import ProcessRecord, free_loopback_port
from services.generator import GeneratorConfig
from tests.integration.streaming import BROKERS, DecisionTail, kill_hard, produce, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.loop]
_alert = msgspec.json.Decoder(Alert).decode


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = settings.child_environment()
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def _start_feedback_app(settings: Settings, logs: Path) -> ProcessRecord:
    env = settings.child_environment()
    argv = [sys.executable, "-m", "services.cli", "feedback-app"]
    return processes.spawn("feedback-app", argv, logs / "feedback-app.log", env=env)


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
        return b"fraudstream_feedback_ready 1.0" in reply.read()


def _first_alert(settings: Settings) -> Alert:
    for _, _, _, value in read_until_idle(settings, settings.topic.alerts, 3.0):
        return _alert(value)
    raise AssertionError("the job raised no alert")


@pytest.mark.parametrize("broker", BROKERS)
def test_fraud_feedback_blocks_the_card_and_counts_once(tmp_path: Path, broker: str) -> None:
    with running_stack(tmp_path / "state", broker) as base:
        settings = base.updated({"feedback_metrics_port": free_loopback_port(),
                                 "feedback_park_s": 3.0})  # fmt: skip
        client = redis.Redis.from_url(settings.redis.require_url())
        job = stack.start_job(settings, tmp_path / "logs")
        app = _start_feedback_app(settings, tmp_path / "logs")
        tail = DecisionTail(settings)
        try:
            produce(settings, 2_000, 0, 51, "2026-03-01T00:00:00Z")
            tail.wait_for(2_000, 180, "the first decisions")
            processes.wait_until(lambda: _ready(settings.feedback.metrics_port), 120,
                                 "feedback app ready", interval=0.5)  # fmt: skip
            alert = _first_alert(settings)
            tx = alert.transaction
            processes.wait_until(
                lambda: client.exists(layout.alert_context(tx.transaction_id)) == 1, 30,
                "the alert remembered",
            )  # fmt: skip
            merchant = layout.merchant_days(tx.merchant_id), f"f{tx.event_time_ms // 86_400_000}"
            before = client.hget(*merchant)

            done = _cli(settings, "feedback", tx.transaction_id, "--label", "fraud", "--note", "t")
            assert done.returncode == 0, done.stderr
            processes.wait_until(lambda: client.exists(layout.blocklist_card(tx.card_id)) == 1,
                                 10.0, "card blocklisted")  # fmt: skip
            blocked_at_ms = time.time() * 1000
            _, _, _, raw = next(iter(read_until_idle(settings, settings.topic.feedback, 2.0)))
            produced_at_ms = msgspec.json.decode(raw, type=Feedback).time

            nxt = Transaction(**msgspec.structs.asdict(tx) | {
                "transaction_id": f"{tx.transaction_id}-next", "amount": 12.5,
                "event_time": tx.event_time_ms + 60_000,
            })  # fmt: skip
            (tmp_path / "next.jsonl").write_bytes(encode(nxt) + b"\n")
            sent = _cli(settings, "produce", "--from-jsonl", str(tmp_path / "next.jsonl"))
            assert sent.returncode == 0, sent.stderr
            decided = tail.wait_for(2_001, 30, "the next transaction")
            verdict = next(d for d in decided if d.transaction_id == nxt.transaction_id)

            again = _cli(settings, "feedback", tx.transaction_id, "--label", "fraud")
            assert again.returncode == 0, again.stderr
            bad = _cli(settings, "feedback", "no-such-transaction", "--label", "legit")
            assert bad.returncode == 0, bad.stderr
            letters = [msgspec.json.decode(v, type=DeadLetter) for _, _, _, v in
                       read_until_idle(settings, settings.topic.feedback_dlq, 15.0)]  # fmt: skip
            after = client.hget(*merchant)
            features = _cli(settings, "features", tx.card_id, "--json")
        finally:
            processes.stop(app)
            processes.stop(job)
            tail.close()

    assert isinstance(produced_at_ms, int)
    assert blocked_at_ms - produced_at_ms < 2_000  # the Feedback's time is set as it is sent
    assert verdict.decision == "decline"
    assert "rule:blocklist_card" in verdict.reasons
    assert int(after or 0) == int(before or 0) + 1  # twice sent, counted once
    assert [d.field for d in letters] == ["transaction_id"]
    assert letters[0].reason.startswith("no transaction known: neither alerted nor in the lake")
    assert features.returncode == 0, features.stderr
    assert f'"{tx.transaction_id}": "fraud"' in features.stdout


def _processed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("fraudstream_feedback_processed_total{"))  # fmt: skip


def test_a_killed_worker_loses_no_feedback_and_counts_each_once(tmp_path: Path) -> None:
    count = 2_000
    with running_stack(tmp_path / "state") as base:
        settings = base.updated({"feedback_metrics_port": free_loopback_port()})
        client = redis.Redis.from_url(settings.redis.require_url())
        txs = [item.transaction for item in generated_items(GeneratorConfig(seed=61), count)]
        cards = {tx.card_id for tx in txs}

        def labelled() -> int:
            return sum(int(client.hlen(layout.card_labels(card))) for card in cards)

        producer = Producer(librdkafka(settings.kafka))
        for tx in txs:
            alert = Alert(
                transaction_id=tx.transaction_id, card_id=tx.card_id, event_time=tx.event_time_ms,
                decided_at=tx.event_time_ms, score=0.9, decision="review", reasons=["model:x"],
                model_version="test", transaction=tx,
            )  # fmt: skip
            producer.produce(settings.topic.alerts, encode(alert), tx.card_id.encode())
        assert producer.flush(30) == 0
        app = _start_feedback_app(settings, tmp_path / "logs")
        try:
            processes.wait_until(lambda: _ready(settings.feedback.metrics_port), 120,
                                 "feedback app ready", interval=0.5)  # fmt: skip
            processes.wait_until(lambda: len(client.keys(layout.alert_context("*"))) == count,
                                 60, "every alert remembered")  # fmt: skip
            for i, tx in enumerate(txs):
                feedback = Feedback(
                    transaction_id=tx.transaction_id,
                    analyst="a",
                    time=tx.event_time_ms,
                    label=("legit", "fraud")[i % 2],
                )
                producer.produce(settings.topic.feedback, encode(feedback))
            assert producer.flush(30) == 0
            processes.wait_until(lambda: _processed(settings.feedback.metrics_port) >= 100, 60,
                                 "some feedback applied", interval=0.01)  # fmt: skip
            kill_hard(app)  # mid-stream: offsets of what it applied may not be committed
            labelled_at_kill = labelled()
            app = _start_feedback_app(settings, tmp_path / "logs")
            processes.wait_until(lambda: labelled() == count, 240, "all applied after restart",
                                 interval=0.5)  # fmt: skip
            processes.wait_until(lambda: _lake_rows(settings.lake_path, "labels") >= count, 60,
                                 "every disposition in the lake")  # fmt: skip
        finally:
            processes.stop(app)
        markers = [layout.merchant_label(tx.merchant_id, tx.transaction_id) for tx in txs]
        counted = [client.get(marker) for marker in markers]
        days = {(tx.merchant_id, tx.event_time_ms // 86_400_000) for tx in txs}
        frauds = [client.hget(layout.merchant_days(m), f"f{day}") for m, day in days]

    assert labelled_at_kill < count, "the kill came too late to test anything"
    assert [c is not None for c in counted] == [True] * count  # each label counted
    assert sum(int(fraud or 0) for fraud in frauds) == count // 2  # and only once
    # a replayed disposition may be published again (labels_all), one row per transaction
    assert _query(settings, "SELECT count(*) AS n FROM labels")[0]["n"] == count


def _lake_rows(lake: Path, table: str) -> int:
    from models.lake.tables import Lake

    return Lake(lake).rows(table)  # type: ignore[arg-type]


def _query(settings: Settings, sql: str) -> list[dict[str, Any]]:
    done = _cli(settings, "lake", "query", sql, "--json")
    assert done.returncode == 0, done.stderr
    return [msgspec.json.decode(line) for line in done.stdout.splitlines()]


def test_lake_labels_retrain_promote_and_the_service_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 20_000
    registry = tmp_path / "registry"
    monkeypatch.setenv("FRAUDSTREAM_MODEL_REGISTRY", str(registry))  # the stack's service too
    # The model in service was trained on an early sample; the lake's labels should beat it.
    early = tmp_path / "early.jsonl"
    for argv in (
        ("produce", "--count", "3000", "--rate", "0", "--fraud-rate", "0.02", "--seed", "70",
         "--customers", "2000", "--start", "2026-02-01T00:00:00Z", "--out", str(early)),
        ("train", "--data", str(early)),
    ):  # fmt: skip
        done = _cli(Settings(), *argv)
        assert done.returncode == 0, done.stderr
    config = GeneratorConfig(seed=71, customers=2_000, fraud_rate=0.02,
                             start_ms=1_772_323_200_000)  # 2026-03-01  # fmt: skip
    items = list(generated_items(config, count))
    truth = {item.transaction.transaction_id: item.is_fraud for item in items}
    # The model in service is its own shadow: every decision's shadow score is its score.
    with running_stack(tmp_path / "state", scoring_shadow_version="v0001") as base:
        settings = base.updated({
            "feedback_metrics_port": free_loopback_port(), "lake_dir": tmp_path / "lake",
            "lake_flush_s": 1.0,
        })  # fmt: skip
        job = stack.start_job(settings, tmp_path / "logs")
        app = _start_feedback_app(settings, tmp_path / "logs")
        tail = DecisionTail(settings)
        try:
            with TransactionProducer(settings) as producer:
                for item in items:
                    producer.send(item.transaction)
            tail.wait_for(count, 300, "decisions")
            alerts = [_alert(v) for _, _, _, v in read_until_idle(settings, settings.topic.alerts)]
            processes.wait_until(lambda: _ready(settings.feedback.metrics_port), 120,
                                 "feedback app ready", interval=0.5)  # fmt: skip
            feedback = Producer(librdkafka(settings.kafka))
            for alert in alerts:
                sent = Feedback(transaction_id=alert.transaction_id, analyst="t",
                                label="fraud" if truth[alert.transaction_id] else "legit",
                                time=alert.decided_at + 60_000)  # fmt: skip
                feedback.produce(settings.topic.feedback, encode(sent))
            assert feedback.flush(30) == 0
            labels_sent = time.monotonic()
            lake = settings.lake_path
            processes.wait_until(
                lambda: (_lake_rows(lake, "labels"), _lake_rows(lake, "transactions"),
                         _lake_rows(lake, "decisions")) == (len(alerts), count, count),
                180, "the lake filled", interval=1.0,
            )  # fmt: skip
            lake_s = time.monotonic() - labels_sent
            labelled = _query(settings, "SELECT * FROM labels WHERE label = 'fraud' LIMIT 1")[0]
            compacted = _cli(settings, "lake", "compact", "--json")  # the app keeps writing
            first_day = "SELECT count(*) AS n FROM transactions WHERE date = DATE '2026-03-01'"
            day_rows = _query(settings, first_day)[0]["n"]
            replayed = _cli(settings, "lake", "replay", "--from", "2026-03-01", "--to",
                            "2026-03-01", "--topic", "backfill", "--json")  # fmt: skip
            backfill = read_until_idle(settings, "backfill", 3.0)
            counts = _query(settings, "SELECT (SELECT count(*) FROM transactions_all) AS t, "
                            "(SELECT count(*) FROM labels) AS l")[0]  # fmt: skip

            ledger = _query(settings, "SELECT count(*) AS n, count(features) AS rows, "
                            "count(shadow_score) AS shadowed, "
                            "max(abs(shadow_score - score)) AS gap FROM decisions")[0]  # fmt: skip
            parity = _rescored_gap(lake, registry)

            started = time.monotonic()
            trained = _cli(settings, "train", "--data", str(lake), "--promote", "--json")
            train_s = time.monotonic() - started
            assert trained.returncode == 0, trained.stderr + trained.stdout
            trained_meta = msgspec.json.decode(trained.stdout)
            version = trained_meta["version"]

            later = GeneratorConfig(seed=72, start_ms=config.start_ms + 86_400_000)
            fresh = {item.transaction.transaction_id: item for item in generated_items(later, 200)}
            with TransactionProducer(settings) as producer:
                for item in fresh.values():
                    producer.send(item.transaction)
            decided = tail.wait_for(count + 200, 60, "decisions after the promotion")
            reload_s = time.monotonic() - started - train_s
            processes.wait_until(lambda: _lake_rows(lake, "decisions") == count + len(fresh),
                                 60, "the fresh decisions in the lake")  # fmt: skip
            compared = _cli(settings, "models", "compare", "v0001", "v0002", "--from",
                            "2026-03-01", "--to", "2026-03-03", "--maturity-days", "0",
                            "--strategy", "0", "--bootstrap", "20", "--json")  # fmt: skip
        finally:
            processes.stop(app)
            processes.stop(job)
            tail.close()

    assert compacted.returncode == 0, compacted.stderr
    assert sum(r["files_in"] for r in msgspec.json.decode(compacted.stdout)) > 0
    assert counts == {"t": count, "l": len(alerts)}  # compaction lost and doubled nothing
    assert replayed.returncode == 0, replayed.stderr
    assert 0 < day_rows < count
    assert msgspec.json.decode(replayed.stdout)["sent"] == day_rows == len(backfill)
    alert = next(a for a in alerts if a.transaction_id == labelled["transaction_id"])
    assert (labelled["score"], labelled["model_version"]) == (alert.score, alert.model_version)
    assert (labelled["alerted"], labelled["card_id"]) == (True, alert.card_id)
    assert version == "v0002"
    assert trained_meta["data"]["source"] == "lake"
    # The ledger: every decision with its feature row, nearly all with the shadow's score
    # (a decision past the scoring deadline has none), which is the model's own here; and the
    # recorded features score as the service scored them.
    assert ledger["rows"] == ledger["n"] == count
    assert ledger["shadowed"] > 0.9 * count
    assert ledger["gap"] == 0.0
    assert parity < 1e-6
    assert compared.returncode == 0, compared.stderr
    judged = msgspec.json.decode(compared.stdout)
    a, b = judged["sources"]["a"], judged["sources"]["b"]
    assert a["recorded"] > 0.9 * judged["rows"]  # v0001 decided them; shadowed the fresh ones
    assert a["recorded"] + a["shadow"] + a["rescored"] == judged["rows"]
    assert 0.9 * len(fresh) < b["recorded"] <= len(fresh)  # v0002 decided only those
    assert b["recorded"] + b["rescored"] == judged["rows"]
    assert (registry / "CURRENT").read_text().strip() == version
    assert {d.model_version for d in decided if d.transaction_id in fresh} == {version}
    print(
        f"{len(alerts)} alerts labelled, in the lake after {lake_s:.1f} s; train and promote"
        f" {train_s:.1f} s (PR-AUC {trained_meta['candidate_pr_auc']:.3f} against"
        f" {trained_meta['previous_pr_auc']:.3f}); 200 decisions by it {reload_s:.1f} s later"
    )


def _rescored_gap(lake: Path, registry: Path) -> float:
    """The largest difference between the service's recorded score and the model's score of
    the recorded feature row, over the decisions scored."""
    from models.training.registry import Registry
    from stream_jobs import backtest as bt
    from stream_jobs import compare

    book = compare.ledger(lake, bt.Range(1_772_323_200_000, 1_772_496_000_000), 0.0)
    recorded, rescored = (compare.scores(Registry(registry), "v0001", book, rescore=again)
                          for again in (False, True))  # fmt: skip
    scored = book.score > 0  # a decision without a score (past the deadline) has 0
    return float(abs(recorded.score - rescored.score)[scored].max())


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


def test_redis_and_lake_outages_stall_the_app_and_lose_nothing(tmp_path: Path) -> None:
    count = 200
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("the lake cannot be created under a file")
    with running_stack(tmp_path / "state") as base:
        settings = base.updated({"feedback_metrics_port": free_loopback_port(),
                                           "lake_dir": blocker / "lake"})  # fmt: skip
        state = stack.status(settings)
        assert state is not None
        redis_record = next(p for p in state.processes if p.name == "redis")
        client = redis.Redis.from_url(settings.redis.require_url())
        txs = [item.transaction for item in generated_items(GeneratorConfig(seed=81), count)]
        app = _start_feedback_app(settings, tmp_path / "logs")
        restarted: ProcessRecord | None = None
        port = settings.feedback.metrics_port
        try:
            processes.wait_until(lambda: _ready(port), 120, "feedback app ready", interval=0.5)
            processes.stop(redis_record)  # Redis goes down before anything arrives
            producer = Producer(librdkafka(settings.kafka))
            for i, tx in enumerate(txs):
                alert = Alert(
                    transaction_id=tx.transaction_id, card_id=tx.card_id, decided_at=1,
                    event_time=tx.event_time_ms, score=0.9, decision="review", reasons=[],
                    model_version="test", transaction=tx,
                )  # fmt: skip
                producer.produce(settings.topic.alerts, encode(alert), tx.card_id.encode())
                feedback = Feedback(transaction_id=tx.transaction_id, analyst="a",
                                    label=("legit", "fraud")[i % 2],
                                    time=tx.event_time_ms)  # fmt: skip
                producer.produce(settings.topic.feedback, encode(feedback))
            assert producer.flush(30) == 0
            processes.wait_until(lambda: _metric(port, "fraudstream_feedback_redis_retries") > 0,
                                 60, "the app meeting the outage")  # fmt: skip
            applied_while_down = _processed(port)
            _, restarted = stack.start_redis(tmp_path / "logs", state.redis_port)  # empty
            processes.wait_until(lambda: _processed(port) == count, 120, "all applied")
            processes.wait_until(lambda: _metric(port, "fraudstream_feedback_lake_errors") > 0,
                                 30, "the lake refusing writes")  # fmt: skip
            blocker.unlink()  # the disk is back
            processes.wait_until(lambda: _lake_rows(settings.lake_path, "labels") == count, 60,
                                 "the lake written after all")  # fmt: skip
            dlq = _metric(port, "fraudstream_feedback_dlq_total")
            cards = {tx.card_id for tx in txs}
            labelled = sum(int(client.hlen(layout.card_labels(card))) for card in cards)
        finally:
            processes.stop(app)
            if restarted is not None:
                processes.stop(restarted)

    assert applied_while_down == 0
    assert dlq == 0  # no disposition given up on
    assert labelled == count
