"""The embedded stack end to end: up, produce through the CLI, read everything back, down."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
import redis

from services.core.contract import Transaction, decode_transaction
from services.core.kafka import read_topic
from services.core.settings import Settings
from services.devstack import processes
from tests.conftest import Run

pytestmark = pytest.mark.integration
COUNT = 20_000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_stack_up_produce_read_back_down(fraudstream: Run, tmp_path: Path) -> None:
    up = fraudstream("stack", "up", "--json")
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    pids = list(state["pids"].values())
    try:
        assert state["running"] is True
        assert state["bootstrap_servers"].startswith("127.0.0.1:")
        assert state["topics"]["transactions"] == 4
        assert set(state["topics"]) == {
            "transactions", "transactions.dlq", "decisions", "alerts", "alert-feedback",
            "alert-feedback.dlq", "labels", "strategy", "chargebacks",
        }  # fmt: skip
        again = fraudstream("stack", "up", "--json")  # idempotent: same stack
        assert json.loads(again.stdout)["pids"] == state["pids"]

        with redis.Redis.from_url(state["redis_url"]) as client:
            assert client.ping() is True
        with urllib.request.urlopen(f"{state['scoring_url']}/readyz") as ready:
            assert json.loads(ready.read())["model_version"] == "v0001"  # the shipped model
        assert state["workbench_url"].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{state['workbench_url']}/readyz") as ready:
            assert ready.read() == b"ok"  # the analysts' page, its cases in the state dir
        shown = fraudstream("stack", "status")
        assert f"the analysts' workbench: {state['workbench_url']}" in shown.stdout

        produced = fraudstream(
            "produce", "--rate", "20000", "--count", str(COUNT), "--seed", "42", "--json"
        )
        assert produced.returncode == 0, produced.stderr
        summary = json.loads(produced.stdout)
        assert summary["delivered"] == COUNT
        assert summary["failed"] == 0

        ids: set[str] = set()
        keys_match = True
        settings = Settings.of(kafka_bootstrap_servers=state["bootstrap_servers"])
        for message in read_topic(settings, "transactions", lambda _n: len(ids) >= COUNT, 90):
            event = decode_transaction(message.value() or b"")
            assert isinstance(event, Transaction)
            ids.add(event.transaction_id)
            keys_match &= message.key() == event.card_id.encode()
        assert len(ids) == COUNT
        assert keys_match

        read = fraudstream("read", "transactions", "--count", str(COUNT), "--json")
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout)["distinct_transaction_ids"] == COUNT

        labels = (tmp_path / "state" / "labels.csv").read_text().splitlines()
        assert labels[0] == "transaction_id,is_fraud,pattern"
        assert len(labels) == COUNT + 1
        assert {line.split(",")[0] for line in labels[1:]} == ids

        def archived() -> bool:  # by the stack's feedback app, in the lake of the state dir
            status = fraudstream("lake", "status", "--json")
            return bool(json.loads(status.stdout)["transactions"]["rows"] == COUNT)

        processes.wait_until(archived, 120, "the transactions archived", interval=1.0)
    finally:
        down = fraudstream("stack", "down", "--json")
    assert down.returncode == 0, down.stderr
    stopped = sorted(json.loads(down.stdout)["stopped"])
    assert stopped == ["broker", "feedback-app", "redis", "scoring", "workbench"]
    assert not any(_alive(pid) for pid in pids)
    repeat = fraudstream("stack", "down", "--json")
    assert repeat.returncode == 0
    assert json.loads(repeat.stdout)["stopped"] == []
    assert fraudstream("stack", "status").returncode == 1


def _lake_rows(fraudstream: Run) -> int:
    status = fraudstream("lake", "status", "--json")
    return int(json.loads(status.stdout)["transactions"]["rows"])


@pytest.mark.timeout(600)
def test_a_restarted_stack_archives_its_new_broker_from_the_start(fraudstream: Run) -> None:
    """The embedded broker keeps nothing across ``stack down``/``up``: its offsets start at 0
    again, so the lake's manifest must not skip them for the offsets of the earlier broker."""
    first, second = 2_000, 3_000
    try:
        for count, seed in ((first, 1), (second, 2)):
            up = fraudstream("stack", "up", "--json")
            assert up.returncode == 0, up.stderr
            produced = fraudstream("produce", "--rate", "0", "--count", str(count), "--seed",
                                   str(seed), "--json")  # fmt: skip
            assert produced.returncode == 0, produced.stderr
            wanted = first if seed == 1 else first + second

            def archived(wanted: int = wanted) -> bool:
                return _lake_rows(fraudstream) >= wanted

            processes.wait_until(archived, 180, f"{wanted} in the lake", interval=1.0)
            assert fraudstream("stack", "down").returncode == 0
        assert _lake_rows(fraudstream) == first + second  # none skipped, none twice
    finally:
        fraudstream("stack", "down")


@pytest.mark.timeout(400)
def test_stack_up_with_apache_kafka_produces_and_reads_back(fraudstream: Run) -> None:
    up = fraudstream("stack", "up", "--broker", "kafka", "--json", timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads(up.stdout)
        assert (state["broker"], state["running"]) == ("kafka", True)
        produced = fraudstream("produce", "--count", "500", "--rate", "0", "--json")
        assert json.loads(produced.stdout)["delivered"] == 500, produced.stderr
        read = fraudstream("read", "transactions", "--count", "500", "--json")
        assert json.loads(read.stdout)["distinct_transaction_ids"] == 500
    finally:
        assert fraudstream("stack", "down").returncode == 0
    again = fraudstream("stack", "up", "--broker", "kafka", "--json", timeout=300)
    try:  # unlike Tansu, the broker kept its log in the state directory
        read = fraudstream("read", "transactions", "--count", "500", "--json")
        assert json.loads(read.stdout)["distinct_transaction_ids"] == 500, again.stderr
    finally:
        fraudstream("stack", "down")
