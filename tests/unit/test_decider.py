"""The Decider without Flink: a real Redis, the shipped model scored in process."""

from __future__ import annotations

import msgspec
import pytest
import redis

from models.registry import DEFAULT_REGISTRY, Registry
from services.core.contract import DeadLetter, Decision, Transaction, encode
from services.devstack.processes import free_loopback_port
from services.scoring.client import ScoringRejected
from services.scoring.server.inprocess import InProcessScorer
from services.scoring.wire import RowResult, ScoreResponse
from stream_jobs import rules
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


def _decider(redis_url: str, scorer: object | None = None) -> Decider:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    registry = Registry(DEFAULT_REGISTRY)
    version = registry.current()
    assert version is not None
    return Decider(client, scorer or InProcessScorer(registry.path(version)), "transactions")  # type: ignore[arg-type]


def _records(n: int) -> list[Record]:
    return [Record(b"c1", encode(_tx(i)), 0, i, 1_772_323_200_000 + i * 1_000) for i in range(n)]


def test_a_record_that_fails_the_decider_is_a_dead_letter_the_rest_are_decided(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that one record triggers (here planted in the rules) costs that record only."""
    real = rules.evaluate

    def planted(tx: Transaction, *args: object, **kwargs: object) -> object:
        if tx.transaction_id == "t13":
            raise KeyError("planted")
        return real(tx, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rules, "evaluate", planted)
    outputs = _decider(redis_url).decide(_records(40))
    letters = {i: o.dead_letter for i, o in enumerate(outputs) if o.dead_letter}
    assert list(letters) == [13]
    letter = msgspec.json.decode(letters[13], type=DeadLetter)
    assert (letter.kind, letter.offset) == ("internal", 13)
    assert "KeyError" in letter.reason
    assert all(o.decision is not None for i, o in enumerate(outputs) if i != 13)


class _ShortReply:
    def score(self, rows: list[list[float]]) -> ScoreResponse:
        return ScoreResponse("v-bad", [RowResult(0.5, [])], 0.5, 0.9)  # one result for any rows


class _Rejecting:
    def score(self, rows: list[list[float]]) -> ScoreResponse:
        raise ScoringRejected("422: a feature the model does not know")


@pytest.mark.parametrize(("scorer", "reason"), [(_ShortReply(), "scoring_reply"),
                                                 (_Rejecting(), "scoring_rejected")])  # fmt: skip
def test_an_unusable_scoring_reply_degrades_never_crashes(
    redis_url: str, scorer: object, reason: str
) -> None:
    outputs = _decider(redis_url, scorer).decide(_records(3))
    decisions = [msgspec.json.decode(o.decision or b"", type=Decision) for o in outputs]
    assert [d.degraded for d in decisions] == [[reason]] * 3
    assert all(d.model_version == "none" for d in decisions)


def test_a_key_that_is_not_the_card_id_is_a_dead_letter(redis_url: str) -> None:
    records = [Record(None, encode(_tx(1)), 0, 1, 1), Record(b"c2", encode(_tx(2)), 0, 2, 2)]
    outputs = _decider(redis_url).decide(records)
    letters = [msgspec.json.decode(o.dead_letter or b"", type=DeadLetter) for o in outputs]
    assert [(d.kind, d.field) for d in letters] == [("key_mismatch", "key")] * 2
    assert letters[1].key == b"c2"


def test_redis_down_reviews_from_the_policy_amount_and_says_why(redis_url: str) -> None:
    """Against a Redis that is not there (a closed port): no history, no blocklists."""
    gone = redis.Redis(host="127.0.0.1", port=free_loopback_port(), socket_timeout=0.2,
                       socket_connect_timeout=0.2)  # fmt: skip
    registry = Registry(DEFAULT_REGISTRY)
    scorer = InProcessScorer(registry.path(registry.current() or ""))
    policy = rules.FailurePolicy(redis_down_review_usd=100.0)
    decider = Decider(gone, scorer, "transactions", policy=policy)
    records = [Record(b"c1", encode(_tx(i, amount=amount)), 0, i, 1)
               for i, amount in enumerate((20.0, 99.0, 100.0, 900.0))]  # fmt: skip
    decisions = [msgspec.json.decode(o.decision or b"", type=Decision)
                 for o in decider.decide(records)]  # fmt: skip
    assert all(d.degraded == ["redis"] for d in decisions)
    flagged = ["policy:redis_down" in d.reasons for d in decisions]
    assert flagged == [False, False, True, True]
    assert all(d.decision != "approve" for d, f in zip(decisions, flagged, strict=True) if f)


def test_scoring_down_with_the_review_policy_reviews_everything(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    policy = rules.FailurePolicy(scoring_down="review")
    decider = Decider(client, _Rejecting(), "transactions", policy=policy)  # type: ignore[arg-type]
    decisions = [msgspec.json.decode(o.decision or b"", type=Decision)
                 for o in decider.decide(_records(3))]  # fmt: skip
    assert all(d.decision == "review" and "policy:scoring_down" in d.reasons for d in decisions)
