"""The Decider without Flink: a real Redis, the shipped model scored in process."""

from __future__ import annotations

import msgspec
import redis

from models.registry import DEFAULT_REGISTRY, Registry
from services.core.contract import DeadLetter, Decision, Transaction, encode
from services.scoring.server.inprocess import InProcessScorer
from stream_jobs.decide import Decider, Record


def _tx(i: int, card: str = "c1", amount: float = 20.0) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}", event_time=1_772_323_200_000 + i * 1_000, card_id=card,
        customer_id="u1", merchant_id="m1", merchant_category="5411", amount=amount,
        currency="USD", country="US", channel="card_present",
    )  # fmt: skip


def test_every_record_gets_a_decision_or_a_dead_letter(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    registry = Registry(DEFAULT_REGISTRY)
    version = registry.current()
    assert version is not None
    decider = Decider(client, InProcessScorer(registry.path(version)), "transactions")
    records = [Record(b"c1", encode(_tx(i)), 0, i, 1_772_323_200_000 + i * 1_000) for i in range(5)]
    records.append(Record(b"c1", b'{"transaction_id": 1}', 0, 5, 1_772_323_205_000))
    outputs = decider.decide(records)
    assert len(outputs) == 6
    decisions = [msgspec.json.decode(o.decision, type=Decision) for o in outputs[:5] if o.decision]
    assert [d.transaction_id for d in decisions] == [f"t{i}" for i in range(5)]
    assert all(d.model_version == version and not d.degraded for d in decisions)
    assert all(0.0 <= d.score <= 1.0 for d in decisions)
    letter = msgspec.json.decode(outputs[5].dead_letter or b"", type=DeadLetter)
    assert letter.field
    assert letter.reason
    assert outputs[5].decision is None
    # The card's history is in Redis: a sixth event sees the five before it.
    later = decider.decide([Record(b"c1", encode(_tx(9)), 0, 6, 1_772_323_209_000)])
    assert later[0].decision is not None
