"""How outcomes combine: rules (the strategy's, the blocklists', the failure policy's) can only
raise a decision (a rule never approves what the model flags), and they keep deciding when
scoring is down. The strategy's own rules are data (``stream_jobs.strategy``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

Outcome = Literal["approve", "review", "decline"]
SEVERITY: Final[dict[Outcome, int]] = {"approve": 0, "review": 1, "decline": 2}
BLOCKLIST_CARD: Final = "rule:blocklist_card"  # a fraud disposition blocked the card
BLOCKLIST_DEVICE: Final = "rule:blocklist_device"

POLICY_PREFIX: Final = "policy:"
REVIEW_SAMPLE: Final = "sample:review"  # approved, and sent to review at random
_SPAN: Final = 2**64


def in_review_sample(transaction_id: str, rate: float) -> bool:
    """Whether an approved transaction is in the random review sample: a hash of its id, so
    a replay samples the same ones and a producer cannot pick them by timing."""
    if rate <= 0:
        return False
    digest = hashlib.blake2b(transaction_id.encode(), digest_size=8, person=b"fs-review").digest()
    return int.from_bytes(digest, "big") < rate * _SPAN


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
