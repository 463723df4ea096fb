"""The strategy in the decider, on a real Redis: versions by event time, lists in force within
2 s, shadow rules recorded, failing rules counted, and the alert budget held."""

from __future__ import annotations

import time

import msgspec
import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from models.online import lists
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.core.contract import Decision, Transaction, encode
from services.scoring.server.inprocess import InProcessScorer
from services.scoring.wire import RowResult, ScoreResponse
from stream_jobs import strategy as st
from stream_jobs import thresholds
from stream_jobs.decide import Decider, Record
from stream_jobs.metrics import JobMetrics
from stream_jobs.strategy_feed import Versions

T0 = 1_772_323_200_000


def _tx(i: int, merchant: str = "m1", amount: float = 20.0) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        event_time=T0 + i * 1_000,
        card_id=f"c{i % 7}",
        customer_id="u1",
        merchant_id=merchant,
        merchant_category="5411",
        amount=amount,
        currency="USD",
        country="US",
        channel="card_present",
    )


def _decide(decider: Decider, txs: list[Transaction]) -> list[Decision]:
    records = [Record(tx.card_id.encode(), encode(tx), 0, i, T0) for i, tx in enumerate(txs)]
    return [msgspec.json.decode(o.decision or b"", type=Decision) for o in decider.decide(records)]


def _client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


def _scorer() -> InProcessScorer:
    registry = Registry(DEFAULT_REGISTRY)
    return InProcessScorer(registry.path(registry.current() or ""))


LATER = """
version: 1
effective_from: {at}
rules:
  - {{id: over_ten, when: "amount_usd > 10.0", outcome: review}}
  - {{id: watch, when: "amount_usd > 10.0", outcome: decline, state: shadow}}
"""


def test_a_version_decides_the_events_from_its_effective_time_on_and_a_replay_agrees(
    redis_url: str,
) -> None:
    at = T0 + 50_000
    versions = Versions([st.Compiled(st.default()), st.Compiled(st.parse(LATER.format(at=at)))])
    txs = [_tx(i) for i in range(100)]

    def run() -> list[Decision]:
        decider = Decider(_client(redis_url), _scorer(), versions=lambda: versions)
        return _decide(decider, txs[:60]) + _decide(decider, txs[60:])

    first = run()
    for d in first:
        later = d.event_time >= at
        assert d.strategy_version == (1 if later else 0)
        assert ("rule:over_ten" in d.reasons) == later
        assert d.shadow == (["rule:watch"] if later else [])
    assert sum(d.strategy_version for d in first) == 50
    replay = run()
    assert [(d.strategy_version, d.reasons, d.shadow, d.decision) for d in replay] == [
        (d.strategy_version, d.reasons, d.shadow, d.decision) for d in first
    ]


def test_a_list_entry_is_in_force_within_2_s_and_its_removal_too(redis_url: str) -> None:
    client = _client(redis_url)
    decider = Decider(client, _scorer())
    assert not any("list:" in r for d in _decide(decider, [_tx(0)]) for r in d.reasons)
    entry = lists.Entry("block", "merchant", "m-bad", "test fraud ring", "analyst", 0)
    lists.add(client, entry, ["m-bad"])
    added = time.monotonic()
    while True:  # the next batches: within 2 s the entry decides
        decision = _decide(decider, [_tx(1, merchant="m-bad"), _tx(2)])
        if "list:block_merchant" in decision[0].reasons:
            break
        assert time.monotonic() - added < 2.0, "the block entry not in force within 2 s"
        time.sleep(0.05)
    assert decision[0].decision == "decline"
    assert "list:block_merchant" not in decision[1].reasons  # another merchant: untouched
    lists.remove(client, "block", "merchant", ["m-bad"])
    removed = time.monotonic()
    while "list:block_merchant" in _decide(decider, [_tx(3, merchant="m-bad")])[0].reasons:
        assert time.monotonic() - removed < 2.0, "the removal not in force within 2 s"
        time.sleep(0.05)


class _Reviewing:
    """The model says review for every row (score 0.5 against a review threshold of 0.1)."""

    def score(self, rows: list[list[float]]) -> ScoreResponse:
        return ScoreResponse(
            "v-test", [RowResult(0.5, ["amount_usd"], 0.5) for _ in rows], 0.1, 0.9
        )


def test_an_allow_entry_spares_the_models_review_but_never_a_block(redis_url: str) -> None:
    client = _client(redis_url)
    decider = Decider(client, _Reviewing())  # type: ignore[arg-type]
    assert _decide(decider, [_tx(0)])[0].decision == "review"
    lists.add(client, lists.Entry("allow", "merchant", "m1", "our own shop", "a", 0), ["m1"])
    lists.add(client, lists.Entry("block", "country", "US", "test", "a", 0), ["US"])
    time.sleep(lists.REFRESH_S)
    spared = _decide(decider, [_tx(1, merchant="m2")])[0]
    assert spared.decision == "decline"  # the country's block: the allow cannot override it
    lists.remove(client, "block", "country", ["US"])
    time.sleep(lists.REFRESH_S)
    allowed, other = _decide(decider, [_tx(2), _tx(3, merchant="m2")])
    assert (allowed.decision, other.decision) == ("approve", "review")
    assert "list:allow_merchant" in allowed.reasons


def test_a_rule_failing_at_run_time_is_counted_and_never_fails_the_batch(redis_url: str) -> None:
    failing = st.parse("""rules:
  - {id: ratio, when: "int(amount_usd) / int(amount - 25.0) > 1", outcome: decline}""")
    metrics = JobMetrics(CollectorRegistry())
    versions = Versions([st.Compiled(failing)])
    decider = Decider(_client(redis_url), _scorer(), metrics=metrics, versions=lambda: versions)
    decisions = _decide(decider, [_tx(i, amount=25.0 if i % 2 else 30.0) for i in range(10)])
    assert len(decisions) == 10
    assert all("rule:ratio" not in d.reasons for i, d in enumerate(decisions) if i % 2)
    errors = metrics.registry.get_sample_value(
        "fraudstream_job_rule_errors_total", {"rule": "rule:ratio"}
    )
    assert errors == 5


@pytest.mark.parametrize(("rate", "workers"), [(20, 1), (400, 2)])
def test_the_alert_budget_holds_and_without_it_reviews_are_many(rate: int, workers: int) -> None:
    """Expected losses of a long-tailed stream (one worker's share, at ``rate`` events/s)
    against a budget of 500 reviews a day for the whole job: once estimated, the share this
    worker reviews is its part of the budget, 1.5 times at most."""
    rng = np.random.default_rng(7)
    budget_t = st.Thresholds(daily_alert_budget=500, budget_refresh_s=60)
    free_t = st.Thresholds(daily_alert_budget=0)
    budget = thresholds.AlertBudget(budget_t, workers)
    free = thresholds.AlertBudget(free_t, workers)
    probabilities = rng.beta(0.3, 20, 200_000)
    amounts = rng.lognormal(3.5, 1.2, 200_000)
    reviewed = {"budget": 0, "free": 0}
    for i, (p, a) in enumerate(zip(probabilities, amounts, strict=True)):
        now = i / rate  # seconds
        for name, b in (("budget", budget), ("free", free)):
            b.observe([thresholds.expected_loss(p, a, b.thresholds)], now)
            b.refresh(now)
            if i >= 20_000:  # after the first estimates
                reviewed[name] += thresholds.outcome(p, a, b.bar(), b.thresholds) == "review"
    allowed = 500 / workers / (rate * 86_400) * 180_000
    assert reviewed["free"] > 20 * allowed, reviewed  # the negative control: the cost bar alone


def test_cost_outcomes_follow_the_expected_costs() -> None:
    t = st.Thresholds(
        review_cost_usd=5.0,
        false_decline_share=0.2,
        false_decline_cost_usd=10.0,
        decline_min_probability=0.5,
    )
    assert thresholds.outcome(0.01, 100.0, 5.0, t) == "approve"  # 1 USD at risk < 5 USD review
    assert thresholds.outcome(0.06, 100.0, 5.0, t) == "review"  # 6 USD
    assert thresholds.outcome(0.4, 10_000.0, 5.0, t) == "review"  # unsure: never declined
    assert thresholds.outcome(0.9, 1_000.0, 5.0, t) == "decline"  # 900 > 0.1 * 210
    assert thresholds.outcome(0.9, 1_000.0, 1_000.0, t) == "decline"  # the budget never hides it
    assert thresholds.outcome(0.06, 100.0, 50.0, t) == "approve"  # above the budget's bar


def test_list_values_match_as_the_job_sees_them(redis_url: str) -> None:
    """A country in any case, a BIN read as a number, an expired entry: none trips the lists."""
    client = _client(redis_url)
    now = int(time.time() * 1000)
    lists.add(client, lists.Entry("block", "country", "NG", "r", "a", now), ["NG"])
    lists.add(client, lists.Entry("block", "bin", "411111", "r", "a", now), ["411111"])
    lists.add(client, lists.Entry("block", "merchant", "m-old", "r", "a", now, now - 1), ["m-old"])
    cache = lists.ListCache(client)
    cache.refresh()
    assert cache.hits({"country": "ng", "bin": 411111.0}, now).block == [
        "list:block_country",
        "list:block_bin",
    ]
    assert cache.hits({"merchant": "m-old"}, now).block == []  # expired
    assert cache.hits({"country": "GB", "bin": "411112"}, now).block == []


def test_a_hash_seeded_sample_of_approvals_goes_to_review_with_its_probability(
    redis_url: str,
) -> None:
    """At 5 %: about one approval in twenty is alerted as ``sample:review`` and stays approved;
    every decision logs its probability of review (1 when flagged); a replay samples the same
    ones. Without a sample (the default) no approval is alerted."""
    from stream_jobs import rules
    from stream_jobs.decide import DecideOptions

    txs = [msgspec.structs.replace(_tx(i), card_id=f"s{i}") for i in range(2_000)]  # first uses

    def run(rate: float) -> tuple[list[Decision], list[str]]:
        decider = Decider(_client(redis_url), _scorer(), DecideOptions(review_sample_rate=rate))
        records = [Record(tx.card_id.encode(), encode(tx), 0, i, T0) for i, tx in enumerate(txs)]
        outputs = decider.decide(records)
        decisions = [msgspec.json.decode(o.decision or b"", type=Decision) for o in outputs]
        alerted = [d.transaction_id for d, o in zip(decisions, outputs, strict=True) if o.alert]
        return decisions, alerted

    decisions, alerted = run(0.05)
    approved = [d for d in decisions if d.decision == "approve"]
    sampled = [d for d in approved if rules.REVIEW_SAMPLE in d.reasons]
    flagged = [d for d in decisions if d.decision != "approve"]
    assert 0.03 < len(sampled) / len(approved) < 0.07
    assert sorted(alerted) == sorted(d.transaction_id for d in sampled + flagged)
    assert {d.review_probability for d in approved} == {0.05}
    assert {d.review_probability for d in flagged} <= {1.0}
    again, _ = run(0.05)
    assert [d.reasons for d in again] == [d.reasons for d in decisions]  # a replay agrees
    none, alerted_without = run(0.0)
    assert not any(rules.REVIEW_SAMPLE in d.reasons for d in none)
    assert sorted(alerted_without) == sorted(d.transaction_id for d in none
                                             if d.decision != "approve")  # fmt: skip
