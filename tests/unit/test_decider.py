"""The Decider without Flink: a real Redis, the shipped model scored in process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import redis
from prometheus_client import CollectorRegistry

from models.online import layout
from models.online.store import OnlineFeatureStore
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.core.contract import Alert, DeadLetter, Decision, Transaction, encode
from services.core.signals import parse_signals
from services.core.tokens import TOKEN_PREFIX, Tokenizer
from services.devstack import processes
from services.devstack.processes import free_loopback_port
from services.devstack.stack import start_redis
from services.scoring.client import ScoringRejected
from services.scoring.server.inprocess import InProcessScorer
from services.scoring.wire import RowResult, ScoreResponse, ShadowResult
from stream_jobs import decide, rules
from stream_jobs import strategy as st
from stream_jobs.decide import DecideOptions, Decider, Output, Record
from stream_jobs.metrics import JobMetrics


def _tx(
    i: int, card: str = "c1", amount: float = 20.0, merchant: str = "m1",
    event_time: int | None = None,
) -> Transaction:  # fmt: skip
    return Transaction(
        transaction_id=f"t{i}", event_time=event_time or 1_772_323_200_000 + i * 1_000,
        card_id=card, customer_id="u1", merchant_id=merchant, merchant_category="5411",
        amount=amount, currency="USD", country="US", channel="card_present",
    )  # fmt: skip


def test_every_record_gets_a_decision_or_a_dead_letter(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    registry = Registry(DEFAULT_REGISTRY)
    version = registry.current()
    assert version is not None
    decider = Decider(client, InProcessScorer(registry.path(version)))
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


def _scorer() -> InProcessScorer:
    registry = Registry(DEFAULT_REGISTRY)
    return InProcessScorer(registry.path(registry.current() or ""))


def _decider(
    redis_url: str, scorer: object | None = None, options: DecideOptions | None = None,
    metrics: JobMetrics | None = None,
) -> Decider:  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return Decider(client, scorer or _scorer(), options or DecideOptions(), metrics)  # type: ignore[arg-type]


def _records(n: int) -> list[Record]:
    return [Record(b"c1", encode(_tx(i)), 0, i, 1_772_323_200_000 + i * 1_000) for i in range(n)]


def test_a_record_that_fails_the_decider_is_a_dead_letter_the_rest_are_decided(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that one record triggers (here planted in the strategy) costs that record only."""
    real = st.Compiled.evaluate

    def planted(self: st.Compiled, row: list[float], tx: Transaction, *args: object) -> object:
        if tx.transaction_id == "t13":
            raise KeyError("planted")
        return real(self, row, tx, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(st.Compiled, "evaluate", planted)
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
        raise ScoringRejected(422, "a feature the model does not know")


@pytest.mark.parametrize(("scorer", "reason"), [(_ShortReply(), "scoring_reply"),
                                                 (_Rejecting(), "scoring_rejected")])  # fmt: skip
def test_an_unusable_scoring_reply_degrades_never_crashes(
    redis_url: str, scorer: object, reason: str
) -> None:
    outputs = _decider(redis_url, scorer).decide(_records(3))
    decisions = [msgspec.json.decode(o.decision or b"", type=Decision) for o in outputs]
    assert [d.degraded for d in decisions] == [[reason]] * 3
    assert all(d.model_version == "none" for d in decisions)


class _ShadowReply:
    """The primary's scores whole; the shadow's ``shadow`` (too few, or out of bounds)."""

    def __init__(self, shadow: list[float]) -> None:
        self._shadow = shadow

    def score(self, rows: list[list[float]]) -> ScoreResponse:
        results = [RowResult(0.25, []) for _ in rows]
        return ScoreResponse("v1", results, 0.5, 0.9, ShadowResult("v2", self._shadow))


@pytest.mark.parametrize("shadow", [[0.5], [0.5, 0.5, float("nan")], [0.5, 0.5, 0.25]])
def test_a_bad_shadow_reply_is_left_out_and_the_decisions_stand(
    redis_url: str, shadow: list[float]
) -> None:
    outputs = _decider(redis_url, _ShadowReply(shadow)).decide(_records(3))
    decisions = [msgspec.json.decode(o.decision or b"", type=Decision) for o in outputs]
    assert [(d.model_version, d.score, d.degraded) for d in decisions] == [("v1", 0.25, [])] * 3
    usable = len(shadow) == 3 and shadow[2] == shadow[2]  # the last case: the control
    expected = shadow if usable else [None] * 3
    assert [d.shadow_score for d in decisions] == expected
    assert {d.shadow_model_version for d in decisions} == {"v2" if usable else ""}


def test_a_key_that_is_not_the_card_id_is_a_dead_letter(redis_url: str) -> None:
    records = [Record(None, encode(_tx(1)), 0, 1, 1), Record(b"c2", encode(_tx(2)), 0, 2, 2)]
    outputs = _decider(redis_url).decide(records)
    letters = [msgspec.json.decode(o.dead_letter or b"", type=DeadLetter) for o in outputs]
    assert [(d.kind, d.field) for d in letters] == [("key_mismatch", "key")] * 2
    assert letters[1].key == b"c2"


def _decisions(outputs: list[Output]) -> list[Decision]:
    return [msgspec.json.decode(o.decision or b"", type=Decision) for o in outputs]


def _gone_redis() -> redis.Redis:
    """A Redis that is not there (a closed port)."""
    return redis.Redis(host="127.0.0.1", port=free_loopback_port(), socket_timeout=0.2,
                       socket_connect_timeout=0.2)  # fmt: skip


def test_redis_down_reviews_every_decision_by_default(redis_url: str) -> None:
    """Fail closed: without the blocklists a blocklisted card would pass unseen (on cdc8e54 a
    decision under 200 USD was approved)."""
    records = [Record(b"c1", encode(_tx(i, amount=amount)), 0, i, 1)
               for i, amount in enumerate((1.0, 20.0, 900.0))]  # fmt: skip
    metrics = JobMetrics(CollectorRegistry())
    decisions = _decisions(Decider(_gone_redis(), _scorer(), metrics=metrics).decide(records))
    assert all(d.degraded == ["redis"] for d in decisions)
    assert all(d.decision == "review" and "policy:redis_down" in d.reasons for d in decisions)
    assert metrics.policy.labels("policy:redis_down")._value.get() == 3


def test_a_review_floor_lets_small_amounts_through_by_the_rules(redis_url: str) -> None:
    options = DecideOptions(policy=rules.FailurePolicy(redis_down_review_usd=100.0))
    records = [Record(b"c1", encode(_tx(i, amount=amount)), 0, i, 1)
               for i, amount in enumerate((20.0, 99.0, 100.0, 900.0))]  # fmt: skip
    decisions = _decisions(Decider(_gone_redis(), _scorer(), options).decide(records))
    flagged = ["policy:redis_down" in d.reasons for d in decisions]
    assert flagged == [False, False, True, True]
    assert all(d.decision != "approve" for d, f in zip(decisions, flagged, strict=True) if f)


def test_scoring_down_reviews_everything_by_default(redis_url: str) -> None:
    decisions = _decisions(_decider(redis_url, _Rejecting()).decide(_records(3)))
    assert all(d.decision == "review" and "policy:scoring_down" in d.reasons for d in decisions)


def test_events_decided_during_a_redis_outage_join_their_cards_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once Redis is back, what was decided without it is recorded (on cdc8e54 it never was,
    so velocity undercounted for ever after, unlike what training computes offline)."""
    monkeypatch.setattr(decide, "REDIS_RETRY_S", 0.0)
    port = free_loopback_port()
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5,
                         socket_connect_timeout=0.5)  # fmt: skip
    metrics = JobMetrics(CollectorRegistry())
    decider = Decider(client, _scorer(), metrics=metrics)
    during = _decisions(decider.decide(_records(5)))
    assert all(d.degraded == ["redis"] for d in during)
    assert metrics.unrecorded_held._value.get() == 5
    url, server = start_redis(tmp_path, port)  # Redis comes back (empty)
    try:
        after = decider.decide([Record(b"c1", encode(_tx(9)), 0, 9, 1)])
        row = OnlineFeatureStore(redis.Redis.from_url(url)).snapshot("c1")
        assert _decisions(after)[0].degraded == []
        assert row is not None
        assert row["count_24h"] == 6
        assert metrics.unrecorded.labels("recorded")._value.get() == 5
        assert metrics.unrecorded_held._value.get() == 0
    finally:
        processes.stop(server)


def test_a_held_event_that_cannot_be_recorded_never_blocks_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decide, "REDIS_RETRY_S", 0.0)
    port = free_loopback_port()
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5,
                         socket_connect_timeout=0.5)  # fmt: skip
    metrics = JobMetrics(CollectorRegistry())
    decider = Decider(client, _scorer(), metrics=metrics)
    held = [Record(b"c1", encode(_tx(i)), 0, i, 1) for i in range(3)]
    held.append(Record(b"c2", encode(_tx(3, card="c2", merchant="m-bad")), 0, 3, 1))
    decider.decide(held)
    _, server = start_redis(tmp_path, port)
    try:
        redis.Redis(host="127.0.0.1", port=port).set(layout.merchant_days("m-bad"), "a string")
        after = _decisions(decider.decide([Record(b"c1", encode(_tx(9)), 0, 9, 1)]))
        assert after[0].degraded == []
        assert metrics.unrecorded.labels("recorded")._value.get() == 3
        assert metrics.unrecorded.labels("dropped")._value.get() == 1
    finally:
        processes.stop(server)


def test_the_outage_backlog_is_bounded_and_counts_what_it_drops(redis_url: str) -> None:
    metrics = JobMetrics(CollectorRegistry())
    decider = Decider(_gone_redis(), _scorer(), DecideOptions(unrecorded_max=3), metrics)
    decider.decide(_records(5))
    assert metrics.unrecorded_held._value.get() == 3
    assert metrics.unrecorded.labels("dropped")._value.get() == 2


def test_a_wrong_type_in_redis_is_the_records_not_an_outage(redis_url: str) -> None:
    """A deterministic Redis error (a key of the wrong type) is not waited out as an outage
    for every batch (on cdc8e54: the whole batch degraded, the fail-open path): the record
    that meets it is a dead letter naming it, the others are decided with their history."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.set(layout.merchant_days("m-bad"), "not a hash")
    records = [Record(b"c1", encode(_tx(i)), 0, i, 1) for i in range(4)]
    records.append(Record(b"c2", encode(_tx(4, card="c2", merchant="m-bad")), 0, 4, 1))
    outputs = Decider(client, _scorer()).decide(records)
    assert [o.decision is not None for o in outputs] == [True, True, True, True, False]
    assert all(d.degraded == [] for d in _decisions(outputs[:4]))
    letter = msgspec.json.decode(outputs[4].dead_letter or b"", type=DeadLetter)
    assert letter.kind == "internal"
    assert "WRONGTYPE" in letter.reason


def test_crafted_ids_with_braces_and_colons_are_decided_with_their_history(redis_url: str) -> None:
    """Ids the contract accepts, with ``{``, ``}`` and ``:``, that once collided with another
    key: every event decided, none degraded, the merchant's counts in its own hash."""
    decider = _decider(redis_url)
    crafted = [_tx(i, card="c}:x{", merchant="shop}:label:z") for i in range(3)]
    crafted += [_tx(3, card="c1", merchant="shop")]
    outputs = decider.decide([Record(tx.card_id.encode(), encode(tx), 0, i, 1)
                              for i, tx in enumerate(crafted)])  # fmt: skip
    decisions = _decisions(outputs)
    assert [d.degraded for d in decisions] == [[]] * 4
    assert [d.transaction_id for d in decisions] == ["t0", "t1", "t2", "t3"]
    row = OnlineFeatureStore(redis.Redis.from_url(redis_url)).snapshot("c}:x{")
    assert row is not None
    assert row["count_24h"] == 3


def test_the_watermark_comes_from_valid_events_only(redis_url: str) -> None:
    """One record dated 2099 (a dead letter: too far ahead) must not make every later event
    late (on cdc8e54 the watermark was read from the raw payload before validation)."""
    metrics = JobMetrics(CollectorRegistry())
    decider = _decider(redis_url, metrics=metrics)
    future = _tx(0, event_time=4_070_908_800_000)  # 2099-01-01
    outputs = decider.decide([Record(b"c1", encode(future), 0, 0, 1), *_records(5)[1:]])
    assert msgspec.json.decode(outputs[0].dead_letter or b"", type=DeadLetter).kind == (
        "event_time_future")  # fmt: skip
    assert metrics.late._value.get() == 0
    late = _tx(7, event_time=_tx(0).event_time_ms - 60_000)  # a minute behind: late
    decider.decide([Record(b"c1", encode(late), 0, 9, 1)])
    assert metrics.late._value.get() == 1


def test_latency_runs_from_the_jobs_read_not_the_kafka_timestamp(redis_url: str) -> None:
    """A producer sets the Kafka timestamp: one from a year ago must not read as a year of
    latency, nor one from the future as none (lag never goes negative either)."""
    metrics = JobMetrics(CollectorRegistry())
    now = int(time.time() * 1000)
    year = 365 * 86_400_000
    records = [Record(b"c1", encode(_tx(0)), 0, 0, now, now - year),
               Record(b"c1", encode(_tx(1)), 0, 1, now, now + year)]  # fmt: skip
    decisions = _decisions(_decider(redis_url, metrics=metrics).decide(records))
    assert all(0 <= d.latency_ms < 60_000 for d in decisions)
    assert metrics.lag_seconds._value.get() == 0.0


class _RowsSeen:
    """A scorer that keeps the rows it was given (an alert everywhere: score 0.99)."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        self.rows += rows
        return ScoreResponse("v-test", [RowResult(0.99, []) for _ in rows], 0.5, 0.999)


SIGNALS = parse_signals("""
attributes:
  email: {type: category, personal: true}
  email_domain: {type: category}
  risk: {type: number, min: 0, max: 100}
entities: [{by: [email_domain]}]
""")


def _with(i: int, attributes: dict[str, object], card: str = "c1") -> Record:
    tx = msgspec.structs.replace(_tx(i, card=card), attributes=attributes)
    return Record(card.encode(), encode(tx), 0, i, tx.event_time_ms)


def test_declared_attributes_are_checked_tokenized_and_become_features(redis_url: str) -> None:
    scorer = _RowsSeen()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    decider = Decider(client, scorer, DecideOptions(signals=SIGNALS), None,
                      Tokenizer(b"k" * 32, "t1"))  # fmt: skip
    domain = {"email_domain": "shop.example", "risk": 12}
    records = [
        _with(1, domain | {"email": "jane@shop.example"}),
        _with(2, domain, card="c2"),
        _with(3, {"colour": "red"}),  # undeclared
        _with(4, {"risk": 1e6}),  # out of bounds
        _with(5, {}),
    ]
    outputs = decider.decide(records)
    letters = [msgspec.json.decode(o.dead_letter, type=DeadLetter) for o in outputs[2:4]
               if o.dead_letter]  # fmt: skip
    assert [(d.field, d.kind) for d in letters] == [("attributes", "invalid"),
                                                    ("attributes.risk", "invalid")]  # fmt: skip
    alert = msgspec.json.decode(outputs[0].alert or b"", type=Alert)
    assert isinstance(alert.transaction.attributes, dict)
    email = alert.transaction.attributes["email"]
    assert isinstance(email, str)
    assert email.startswith(TOKEN_PREFIX)  # never in clear past the job's edge
    assert b"jane@" not in (outputs[0].alert or b"")
    second = msgspec.json.decode(outputs[1].alert or b"", type=Alert).features
    assert second["attr_risk"] == 12
    assert second["ent_email_domain_count_1h"] == 2  # the first one, on another card, too
    assert second["ent_email_domain_cards_24h"] == 2
    assert len(scorer.rows[0]) == len(DecideOptions(signals=SIGNALS).feature_names)
    last = msgspec.json.decode(outputs[4].alert or b"", type=Alert).features
    assert last["ent_email_domain_count_1h"] is None  # no domain: missing, not zero


def test_without_redis_declared_signals_are_features_of_the_event_alone() -> None:
    scorer = _RowsSeen()
    decider = Decider(_gone_redis(), scorer, DecideOptions(signals=SIGNALS))
    outputs = decider.decide([_with(1, {"email_domain": "shop.example", "risk": 3}), _with(2, {})])
    decisions = _decisions(outputs)
    assert [d.degraded for d in decisions] == [["redis"], ["redis"]]
    names = DecideOptions(signals=SIGNALS).feature_names
    first, second = (dict(zip(names, row, strict=True)) for row in scorer.rows)
    assert first["ent_email_domain_count_30d"] == 1  # itself, nothing else known
    assert first["attr_risk"] == 3
    assert second["ent_email_domain_count_30d"] != second["ent_email_domain_count_30d"]  # NaN
