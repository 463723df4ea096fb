"""Never stop deciding: thousands of hostile records of every kind in the table, interleaved
with valid transactions, through the real PyFlink job on the embedded stack."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.clients.producer import TransactionProducer
from services.clients.reading import read_until_idle
from services.clients.verify import Verification, verify
from services.core.contract import DeadLetter
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import free_loopback_port
from tests.hostile import CASES, Case
from tests.integration.streaming import BROKERS, produce, running_stack

pytestmark = pytest.mark.integration
VALID_PER_PHASE = 5_000


def _rest(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return json.load(reply)


def _job_restarts(port: int) -> tuple[str, int]:
    """The job's state and how many failures (each a restart) Flink has recorded."""
    (job,) = _rest(port, "/jobs/overview")["jobs"]
    history = _rest(port, f"/jobs/{job['jid']}/exceptions")["exceptionHistory"]
    return job["state"], len(history["entries"])


Sent = tuple[str, bytes | None]  # a record's SHA-256 and key: what its dead letter names


def _send_hostile(settings: Settings) -> dict[Sent, Case]:
    """Every case's copies, each (SHA-256, key) -> its case."""
    sent: dict[Sent, Case] = {}
    with TransactionProducer(settings, config={"message.max.bytes": 4 << 20}) as producer:
        for case in CASES:
            for i in range(case.copies):
                key, value = case.make(i)
                producer.send_raw(key, value)
                sent[(hashlib.sha256(value).hexdigest(), key)] = case
    assert producer.report.failed == 0, producer.report.errors
    return sent


def _wait_complete(settings: Settings, timeout: float) -> Verification:
    deadline = time.monotonic() + timeout
    while True:
        result = verify(settings, idle_s=3.0)
        if result.complete or time.monotonic() > deadline:
            return result


@pytest.mark.timeout(600)
@pytest.mark.parametrize("broker", BROKERS)
def test_hostile_records_are_dead_lettered_and_every_valid_one_decided_once(
    tmp_path: Path, broker: str
) -> None:
    with running_stack(tmp_path / "state", broker) as base:
        settings = base.updated({"job_rest_port": free_loopback_port()})
        job = stack.start_job(settings, tmp_path / "logs")
        try:
            produce(settings, VALID_PER_PHASE, 0, 41, "2026-03-01T00:00:00Z")
            sent = _send_hostile(settings)
            produce(settings, VALID_PER_PHASE, 0, 42, "2026-03-02T00:00:00Z")
            result = _wait_complete(settings, 300)
            state, restarts = _job_restarts(settings.job.rest_port)
        finally:
            processes.stop(job)
        letters = [msgspec.json.decode(r.value, type=DeadLetter)
                   for r in read_until_idle(settings, settings.topic.dlq, 2.0)]  # fmt: skip

    assert result.valid == 2 * VALID_PER_PHASE
    assert (result.missing, result.duplicates, result.unexpected) == (0, 0, 0), result
    assert result.invalid == len(sent), result
    assert result.invalid_not_dead_lettered == 0
    assert (state, restarts) == ("RUNNING", 0)
    by_record = {(letter.raw_sha256, letter.key): letter for letter in letters}
    assert len(letters) == len(by_record) == len(sent)
    lettered: Counter[str] = Counter()
    for record, case in sent.items():
        letter = by_record[record]
        assert (letter.kind, letter.field) == (case.kind, case.field), (case.name, letter.reason)
        assert len(letter.raw) <= settings.dlq.raw_bytes
        lettered[case.name] += 1
    assert lettered == {case.name: case.copies for case in CASES}
    print(f"\nvalid sent {result.valid}, decided {result.decisions}; dead letters per kind:")
    for case in CASES:
        print(f"  {case.name}: sent {case.copies}, dead-lettered {lettered[case.name]} "
              f"as {case.kind}/{case.field}")  # fmt: skip
    print(f"job state {state}, restarts {restarts}")
