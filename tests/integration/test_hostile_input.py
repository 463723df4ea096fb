"""Never stop deciding: thousands of hostile records of every kind in the table, interleaved
with valid transactions, through the real PyFlink job on the embedded stack."""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from models.features.fold import RING
from services.clients.producer import TransactionProducer
from services.clients.reading import read_until_idle
from services.clients.verify import Verification, verify
from services.core.contract import DeadLetter
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import free_loopback_port
from tests.cards import card_number, found, grouped, redis_dump
from tests.hostile import CASES, Case, body
from tests.integration.streaming import BROKERS, job_metric, produce, running_stack

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


BURST, OLDER = RING + 16, 16  # a card-testing burst on a full ring, then 16 older than all


def _send_tricky(settings: Settings, pans: list[str]) -> dict[str, int]:
    """Valid transactions a foreign producer might send that once broke the job: ids with
    ``{``, ``}`` and ``:``, card numbers grouped by spaces or dashes, a burst that fills a
    card's ring and then events older than all of it; and one dated 2099, which the job
    refuses (event_time_future) and which must not make later events late. How many of each."""
    now = int(time.time() * 1000) - 3_600_000  # later than every generated event
    records = [(b"c-2099", body(4000, card_id="c-2099", event_time=4_070_908_800_000))]
    for i in range(20):
        card = "c}:x{"
        records.append((card.encode(), body(1000 + i, transaction_id=f"z}}:days-{i}",
                        card_id=card, customer_id="u{1}:", merchant_id="shop}:label:z",
                        event_time=now + i)))  # fmt: skip
    for i, pan in enumerate(pans):
        written = grouped(pan, " -"[i % 2])
        records.append((written.encode(), body(2000 + i, card_id=written, customer_id=written,
                                               event_time=now + i)))  # fmt: skip
    times = [now + i * 1_000 for i in range(RING)] + [now - i * 1_000 for i in range(1, OLDER + 1)]
    for i, t in enumerate(times):
        records.append((b"c-burst", body(3000 + i, card_id="c-burst", amount=1.0, event_time=t)))
    with TransactionProducer(settings) as producer:
        for key, value in records:
            producer.send_raw(key, value)
    return {"crafted": 20, "grouped": len(pans), "burst": len(times), "future": 1}


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
        pans = [card_number(random.Random(i)) for i in range(10)]
        try:
            produce(settings, VALID_PER_PHASE, 0, 41, "2026-03-01T00:00:00Z")
            sent = _send_hostile(settings)
            produce(settings, VALID_PER_PHASE, 0, 42, "2026-03-02T00:00:00Z")
            tricky = _send_tricky(settings, pans)  # dated now: the latest on every partition
            result = _wait_complete(settings, 300)
            state, restarts = _job_restarts(settings.job.rest_port)
            late = job_metric(settings, "fraudstream_job_late_events_total")
        finally:
            processes.stop(job)
        letters = [msgspec.json.decode(r.value, type=DeadLetter)
                   for r in read_until_idle(settings, settings.topic.dlq, 2.0)]  # fmt: skip
        outputs = b"".join(r.value + (r.key or b"") for topic in (
            settings.topic.decisions, settings.topic.alerts, settings.topic.dlq)
            for r in read_until_idle(settings, topic, 2.0))  # fmt: skip
        with redis.Redis.from_url(settings.redis.require_url()) as client:
            stored = redis_dump(client)

    valid = 2 * VALID_PER_PHASE + sum(tricky.values())
    assert result.valid == valid
    assert (result.missing, result.duplicates, result.unexpected) == (0, 0, 0), result
    assert result.valid_dead_lettered == tricky["future"]  # verify counts it, not as missing
    assert result.invalid == len(sent), result
    assert result.invalid_not_dead_lettered == 0
    assert (state, restarts) == ("RUNNING", 0)
    assert [d.kind for d in letters if d.kind not in {c.kind for c in CASES}] == [
        "event_time_future"
    ]  # none internal: the burst, the crafted ids were all decided
    assert late == OLDER  # the burst's older events only: the 2099 record moved no watermark
    assert found(outputs + stored, pans) == set()  # grouped numbers tokenized as well
    assert found(b" ".join(p.encode() for p in pans), pans) == set(pans)  # the scan can see
    letters = [d for d in letters if d.kind != "event_time_future"]
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
