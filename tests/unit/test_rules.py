"""Rules: each fires on its condition only, and a rule can raise but never lower a decision."""

from __future__ import annotations

from models.features import definitions as f
from services.core.contract import Transaction
from stream_jobs import rules

TX = Transaction(
    transaction_id="t1", event_time=1_772_323_200_000, card_id="c1", customer_id="u1",
    merchant_id="m1", merchant_category="5411", amount=25.0, currency="USD", country="US",
    channel="card_present", device_id="d1",
)  # fmt: skip


def _row(**values: float) -> list[float]:
    base = dict.fromkeys(f.FEATURE_NAMES, 0.0) | {"amount_usd": 25.0}
    return [(base | values)[name] for name in f.FEATURE_NAMES]


def test_quiet_event_fires_nothing() -> None:
    assert rules.evaluate(TX, _row(), card_blocked=False, device_blocked=False) == []


def test_each_rule_fires_on_its_own_condition() -> None:
    fired = dict(rules.evaluate(TX, _row(), card_blocked=True, device_blocked=True))
    assert fired == {"rule:blocklist_card": "decline", "rule:blocklist_device": "decline"}
    over = rules.AMOUNT_LIMIT_USD["5411"] + 1
    assert rules.evaluate(TX, _row(amount_usd=over), False, False) == [
        ("rule:amount_limit", "review")
    ]
    travel = _row(speed_from_prev_kmh=5_000.0, distance_from_prev_km=3_000.0)
    assert rules.evaluate(TX, travel, False, False) == [("rule:impossible_travel", "review")]
    short_hop = _row(speed_from_prev_kmh=5_000.0, distance_from_prev_km=10.0)
    assert rules.evaluate(TX, short_hop, False, False) == []
    testing = _row(tiny_count_10m=float(rules.CARD_TESTING_TINY))
    assert rules.evaluate(TX, testing, False, False) == [("rule:card_testing", "review")]


def test_model_thresholds_and_combination() -> None:
    assert rules.model_outcome(0.01, 0.1, 0.5) == "approve"
    assert rules.model_outcome(0.1, 0.1, 0.5) == "review"
    assert rules.model_outcome(0.7, 0.1, 0.5) == "decline"
    assert rules.combine("decline", [("rule:amount_limit", "review")]) == "decline"
    assert rules.combine("approve", [("rule:card_testing", "review")]) == "review"
    assert rules.combine("review", []) == "review"
