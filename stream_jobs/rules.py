"""Business rules beside the model: each a pure function of the event, its features and the
blocklists, returning rule ids with the outcome they demand. Rules can only raise a decision
(a rule never approves what the model flags), and they keep deciding when scoring is down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from models.features import definitions as f
from services.core.contract import Transaction

Outcome = Literal["approve", "review", "decline"]
SEVERITY: Final[dict[Outcome, int]] = {"approve": 0, "review": 1, "decline": 2}

# Per-MCC single-transaction limits in USD (issuers set such limits by category); others:
# AMOUNT_LIMIT_DEFAULT_USD. Above the limit the transaction goes to review.
AMOUNT_LIMIT_USD: Final[dict[str, float]] = {
    "7995": 2_000.0, "4829": 2_500.0, "6051": 2_500.0, "6011": 1_000.0, "5944": 5_000.0,
    "5732": 4_000.0, "5816": 500.0, "5815": 300.0, "5411": 1_500.0, "5541": 500.0,
    "5812": 1_000.0, "5814": 300.0,
}  # fmt: skip
AMOUNT_LIMIT_DEFAULT_USD: Final = 10_000.0
IMPOSSIBLE_SPEED_KMH: Final = 1_000.0  # faster than an airliner
IMPOSSIBLE_MIN_KM: Final = 500.0  # short hops (GPS noise, neighbouring towns) never count
CARD_TESTING_TINY: Final = 5  # tiny charges within 10 minutes, this one included

_NAMES = {name: i for i, name in enumerate(f.FEATURE_NAMES)}


def _feature(row: list[float], name: str) -> float:
    return row[_NAMES[name]]


def evaluate(
    tx: Transaction, row: list[float], card_blocked: bool, device_blocked: bool
) -> list[tuple[str, Outcome]]:
    """The rules that fire for this event, as (rule id, outcome)."""
    fired: list[tuple[str, Outcome]] = []
    if card_blocked:
        fired.append(("rule:blocklist_card", "decline"))
    if device_blocked:
        fired.append(("rule:blocklist_device", "decline"))
    limit = AMOUNT_LIMIT_USD.get(tx.merchant_category, AMOUNT_LIMIT_DEFAULT_USD)
    if _feature(row, "amount_usd") > limit:
        fired.append(("rule:amount_limit", "review"))
    if (
        _feature(row, "speed_from_prev_kmh") > IMPOSSIBLE_SPEED_KMH
        and _feature(row, "distance_from_prev_km") > IMPOSSIBLE_MIN_KM
    ):
        fired.append(("rule:impossible_travel", "review"))
    if _feature(row, "tiny_count_10m") >= CARD_TESTING_TINY:
        fired.append(("rule:card_testing", "review"))
    return fired


POLICY_PREFIX: Final = "policy:"


@dataclass(frozen=True)
class FailurePolicy:
    """What a decision may be when a dependency is missing (``FRAUDSTREAM_JOB_*_DOWN_REVIEW_USD``).

    Fail closed by default: without Redis the job knows neither the card's history nor the
    blocklists (a blocklisted card would pass unseen), without scoring only the rules speak;
    so a decision made without either is at least ``review`` from 0 USD up, never approved
    unseen. An issuer that accepts small amounts during an outage (stand-in limits) raises a
    floor; review rather than decline, so an outage holds payments for a look instead of
    refusing every customer.
    """

    redis_down_review_usd: float = 0.0
    scoring_down_review_usd: float = 0.0


def when_degraded(
    degraded: list[str], amount_usd: float, policy: FailurePolicy
) -> list[tuple[str, Outcome]]:
    """The policy rules that fire for a decision made without ``degraded`` dependencies."""
    fired: list[tuple[str, Outcome]] = []
    if "redis" in degraded and amount_usd >= policy.redis_down_review_usd:
        fired.append((f"{POLICY_PREFIX}redis_down", "review"))
    scoring = any(d.startswith("scoring") for d in degraded)
    if scoring and amount_usd >= policy.scoring_down_review_usd:
        fired.append((f"{POLICY_PREFIX}scoring_down", "review"))
    return fired


def model_outcome(score: float, review_threshold: float, decline_threshold: float) -> Outcome:
    if score >= decline_threshold:
        return "decline"
    return "review" if score >= review_threshold else "approve"


def combine(model: Outcome, fired: list[tuple[str, Outcome]]) -> Outcome:
    """The most severe of the model's outcome and every fired rule's."""
    return max([model, *(outcome for _, outcome in fired)], key=SEVERITY.__getitem__)
