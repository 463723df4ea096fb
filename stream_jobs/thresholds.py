"""The model's outcome by expected cost, under a daily alert budget.

With p the calibrated fraud probability and A the amount in USD (Elkan 2001; Correa Bahnsen et
al. 2013/2015, example-dependent costs):

- approving costs p·A·loss_share (the chargeback), reviewing costs review_cost_usd (the fraud
  is caught), declining costs (1-p)·(false_decline_share·A + false_decline_cost_usd) (a good
  customer refused);
- review when the expected loss saved p·A·loss_share is at least the review bar, which is the
  cost of a review, raised so that expected reviews per day stay within the team's budget k;
- decline when declining costs less than approving and p ≥ decline_min_probability (never on
  a probability alone the model is unsure of).

The budget bar is the expected loss that lets k events a day through, from the events this
worker decided in the last ``budget_window_s`` (times the job's parallelism: Kafka spreads
cards evenly over partitions), re-estimated every ``budget_refresh_s``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from stream_jobs.rules import Outcome
from stream_jobs.strategy import Thresholds

DAY_S: Final = 86_400
BUCKET_S: Final = 60  # the estimate's resolution in time
TOP: Final = 1_000  # the largest expected losses kept per bucket: the bar is among them
MIN_SAMPLE: Final = 200  # fewer decided events: no estimate yet, the cost bar alone


def expected_loss(probability: float, amount_usd: float, t: Thresholds) -> float:
    return probability * amount_usd * t.loss_share


def outcome(probability: float, amount_usd: float, review_bar: float, t: Thresholds) -> Outcome:
    """The model's outcome for one event by cost (``review_bar``: from ``AlertBudget.bar``)."""
    loss = expected_loss(probability, amount_usd, t)
    false_decline = (1 - probability) * (t.false_decline_share * amount_usd
                                         + t.false_decline_cost_usd)  # fmt: skip
    if probability >= t.decline_min_probability and loss > false_decline:
        return "decline"
    return "review" if loss >= review_bar and loss > 0 else "approve"


@dataclass(frozen=True)
class _Bucket:
    at: int  # its start, in BUCKET_S
    events: int
    top: npt.NDArray[np.float64]  # its largest expected losses, at most TOP


class AlertBudget:
    """The review bar in force: the cost of a review, raised to hold the daily budget.

    Expected losses are kept per minute of the decider's clock (the job's wall clock; the
    backtest's event time), as the count of events and the largest ``TOP``: the bar lets
    k = budget * window / day / workers events of the window through, the (k+1)-th largest,
    which is among the kept ones while k < ``TOP``. A producer's clock (an event dated ahead)
    never moves the window."""

    def __init__(self, thresholds: Thresholds, workers: int = 1) -> None:
        self._t = thresholds
        self._workers = max(workers, 1)
        self._buckets: deque[_Bucket] = deque()
        self._current: list[float] = []
        self._current_at: int | None = None
        self._bar = thresholds.review_cost_usd
        self._next_at = 0.0

    @property
    def thresholds(self) -> Thresholds:
        return self._t

    def bar(self) -> float:
        return self._bar

    def use(self, thresholds: Thresholds) -> None:
        """Follow another version's thresholds (the events seen are kept)."""
        if thresholds != self._t:
            self._t, self._next_at = thresholds, 0.0

    def observe(self, losses: Iterable[float], now: float) -> None:
        """The expected losses of events decided at ``now`` (seconds; non-finite ones are
        skipped: a broken score never moves the bar)."""
        at = int(now // BUCKET_S)
        if self._current_at is not None and at != self._current_at:
            self._close()
        self._current_at = at
        self._current.extend(loss for loss in losses if math.isfinite(loss))

    def _close(self) -> None:
        assert self._current_at is not None
        values = np.asarray(self._current, np.float64)
        top = values if len(values) <= TOP else np.partition(values, -TOP)[-TOP:]
        self._buckets.append(_Bucket(self._current_at, len(values), top))
        self._current = []
        oldest = self._current_at - self._t.budget_window_s // BUCKET_S
        while self._buckets and self._buckets[0].at <= oldest:
            self._buckets.popleft()

    def refresh(self, now: float) -> float:
        """Re-estimate the bar when its schedule says so; the bar in force."""
        if now >= self._next_at:
            self._next_at = now + self._t.budget_refresh_s
            self._bar = max(self._t.review_cost_usd, self.estimate(now))
        return self._bar

    def estimate(self, now: float) -> float:
        """The expected loss from which k events of the window are above it (0 without a
        budget, enough events, or a binding budget)."""
        oldest = int(now // BUCKET_S) - self._t.budget_window_s // BUCKET_S
        buckets = [b for b in self._buckets if b.at > oldest]
        events = sum(b.events for b in buckets) + len(self._current)
        if self._t.daily_alert_budget == 0 or events < MIN_SAMPLE:
            return 0.0
        first = buckets[0].at if buckets else int(now // BUCKET_S)
        span_s = max(now - first * BUCKET_S, BUCKET_S)
        allowed = int(self._t.daily_alert_budget * span_s / DAY_S / self._workers)
        kept = np.concatenate([*(b.top for b in buckets), np.asarray(self._current, float)])
        if allowed >= len(kept):
            return 0.0  # more allowed than kept: the budget does not bind
        return float(np.partition(kept, -(allowed + 1))[-(allowed + 1)])
