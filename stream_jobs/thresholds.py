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

The budget bar is the expected-loss quantile that lets k events a day through: the daily
volume and the distribution come from the last ``budget_window_s`` of event time that this
worker decided, times the job's parallelism (Kafka spreads cards evenly over partitions), and
are re-estimated every ``budget_refresh_s``.
"""

from __future__ import annotations

import time
from typing import Final

import numpy as np

from stream_jobs.rules import Outcome
from stream_jobs.strategy import Thresholds

DAY_S: Final = 86_400
MIN_SAMPLE: Final = 200  # fewer decided events: no estimate yet, the cost bar alone
MAX_SAMPLE: Final = 100_000  # expected losses kept for the estimate (the newest)


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


class AlertBudget:
    """The review bar in force: the cost of a review, raised to hold the daily budget."""

    def __init__(self, thresholds: Thresholds, workers: int = 1) -> None:
        self._t = thresholds
        self._workers = max(workers, 1)
        self._times = np.zeros(MAX_SAMPLE, np.int64)  # a ring of the newest events seen
        self._losses = np.zeros(MAX_SAMPLE, np.float64)
        self._seen = 0
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

    def observe(self, event_time_ms: int, loss: float) -> None:
        slot = self._seen % MAX_SAMPLE
        self._times[slot], self._losses[slot] = event_time_ms, loss
        self._seen += 1

    def refresh(self, now: float | None = None) -> float:
        """Re-estimate the bar when its schedule says so; the bar in force."""
        now = time.monotonic() if now is None else now
        if now >= self._next_at:
            self._next_at = now + self._t.budget_refresh_s
            self._bar = max(self._t.review_cost_usd, self.estimate())
        return self._bar

    def estimate(self) -> float:
        """The expected loss above which k events a day are expected (0 without a budget or
        enough events)."""
        filled = min(self._seen, MAX_SAMPLE)
        if self._t.daily_alert_budget == 0 or filled < MIN_SAMPLE:
            return 0.0
        times, losses = self._times[:filled], self._losses[:filled]
        newest = int(times.max())
        recent = times >= newest - self._t.budget_window_s * 1000
        if recent.sum() < MIN_SAMPLE:
            return 0.0
        span_s = max((newest - int(times[recent].min())) / 1000, 1.0)
        per_day = recent.sum() / span_s * DAY_S * self._workers
        share = self._t.daily_alert_budget / per_day
        if share >= 1:
            return 0.0
        return float(np.quantile(losses[recent], 1 - share, method="higher"))
