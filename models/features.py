"""The one definition of every model feature: names, order, meaning and shared constants.

Two implementations compute them and must agree (a parity test replays data through both):
``models.offline`` vectorised over a whole history, for training, and ``models.online``
incremental per event with state in Redis, for the stream job.

Semantics both follow:
- Events of a card are ordered by (event_time, transaction_id); "prior" means earlier in that
  order. Windows are in event time, half-open ``(t - W, t]``.
- Velocity windows (1 min, 1 h, 24 h), distinct counts (24 h) and the tiny-amount count
  (10 min) include the current event; 30-day statistics and "previous" exclude it.
- History is 30 days: a card's events older than that are forgotten (Redis keeps no more).
- Amounts are compared in USD at the reference rates of ``services.core.currency``.
- Merchant fraud rate uses labels known at the event's time: a label counts from its
  ``label_time`` on (offline, generated labels arrive ``LABEL_DELAY_MS`` after the event).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

_Number = TypeVar("_Number", float, npt.NDArray[np.float64])  # one row, or a whole column

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
HISTORY_MS: Final = 30 * DAY_MS
VELOCITY_WINDOWS: Final = {"1m": MINUTE_MS, "1h": HOUR_MS, "24h": DAY_MS}
DISTINCT_WINDOW_MS: Final = DAY_MS
TINY_WINDOW_MS: Final = 10 * MINUTE_MS
TINY_USD: Final = 2.0  # card testing charges are at most a couple of dollars
NO_PREVIOUS_S: Final = HISTORY_MS / SECOND_MS  # seconds_since_prev when the card has no history
MIN_TRAVEL_H: Final = 1.0 / 60.0  # speed over less than a minute is counted as over a minute
LABEL_DELAY_MS: Final = 2 * DAY_MS  # offline: when a generated or file label becomes known
MERCHANT_PRIOR_RATE: Final = 0.005  # smoothing toward the overall fraud rate ...
MERCHANT_PRIOR_WEIGHT: Final = 50.0  # ... with the weight of this many labels
EARTH_RADIUS_KM: Final = 6371.0

# Prior fraud risk by merchant category (0..1), from issuers' published category risk: gambling,
# money transfer, quasi-cash and jewelry high; groceries and fuel low. Unknown MCCs: DEFAULT.
MCC_RISK: Final[dict[str, float]] = {
    "7995": 0.9, "4829": 0.9, "6051": 0.85, "5944": 0.7, "5732": 0.6, "5816": 0.5,
    "5815": 0.45, "5999": 0.4, "4722": 0.4, "4511": 0.35, "7011": 0.3, "5311": 0.3,
    "5651": 0.3, "6011": 0.3, "5200": 0.2, "7999": 0.25, "4121": 0.2, "5812": 0.1,
    "5814": 0.1, "5912": 0.1, "5541": 0.1, "5411": 0.05, "5995": 0.15, "7230": 0.1,
    "7997": 0.15,
}  # fmt: skip
MCC_RISK_DEFAULT: Final = 0.3


@dataclass(frozen=True)
class Feature:
    name: str
    meaning: str


FEATURES: Final[tuple[Feature, ...]] = (
    Feature("amount_usd", "amount in USD"),
    *(
        Feature(
            f"{stat}_{w}", f"{stat} of the card's amounts (USD) in the last {w}, this one included"
        )
        for w in VELOCITY_WINDOWS
        for stat in ("count", "sum", "mean", "max")
    ),
    Feature("history_count_30d", "the card's prior events in 30 days"),
    Feature("amount_to_mean_30d", "amount / mean of the card's prior 30-day amounts (1: none)"),
    Feature("amount_zscore_30d", "(amount - mean) / max(std, 5% of mean, 0.01) over 30 days"),
    Feature("seconds_since_prev", "since the card's previous event (30 days if none)"),
    Feature("distinct_merchants_24h", "distinct merchants of the card in 24 h, this one included"),
    Feature("distinct_countries_24h", "distinct countries of the card in 24 h, this one included"),
    Feature("distinct_devices_24h", "distinct devices of the card in 24 h, this one included"),
    Feature("distance_from_prev_km", "km from the card's previous located event (0: unknown)"),
    Feature("speed_from_prev_kmh", "that distance over the time since, at least a minute"),
    Feature("new_device", "1 if the device is not among the card's 30-day history (with history)"),
    Feature("new_country", "1 if the country is not among the card's 30-day history"),
    Feature("hour_of_day", "local hour: offset from the longitude (or the last known one)"),
    Feature("day_of_week", "local day of week, Monday = 0"),
    Feature("mcc_risk", "prior risk of the merchant category"),
    Feature("merchant_fraud_rate", "smoothed fraud rate of the merchant's known labels"),
    Feature("tiny_count_10m", "the card's charges of at most 2 USD in 10 min, this one included"),
    Feature("is_ecommerce", "channel is ecommerce"),
    Feature("is_atm", "channel is atm"),
)
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)

# The classic anonymised card data set (Time, V1..V28, Amount, Class) has no card, merchant or
# place: only these per-row features apply to it.
ANONYMISED_FEATURE_NAMES: Final[tuple[str, ...]] = (
    "amount",
    "hour_of_day",
    *(f"v{i}" for i in range(1, 29)),
)


def mcc_risk(mcc: str) -> float:
    return MCC_RISK.get(mcc, MCC_RISK_DEFAULT)


def merchant_fraud_rate(fraud: _Number, labelled: _Number) -> _Number:
    """Fraud share of a merchant's labels, pulled toward the prior when labels are few."""
    prior = MERCHANT_PRIOR_RATE * MERCHANT_PRIOR_WEIGHT
    return (fraud + prior) / (labelled + MERCHANT_PRIOR_WEIGHT)


def zscore(amount: float, mean: float, std: float) -> float:
    """Distance from the card's mean in its own spread, the spread floored so that a card
    with identical amounts does not make every new amount look infinitely unusual."""
    return (amount - mean) / max(std, 0.05 * mean, 0.01)


@dataclass(frozen=True)
class Ops:
    """The math the location helpers use: ``SCALAR`` for one event (online), ``VECTOR`` for
    whole columns (``models.offline``), so both paths run the same formulas."""

    radians: Callable[[Any], Any]
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]
    arcsin: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]
    minimum: Callable[[Any, Any], Any]
    floor: Callable[[Any], Any]


SCALAR = Ops(math.radians, math.sin, math.cos, math.asin, math.sqrt, min, math.floor)
VECTOR = Ops(np.radians, np.sin, np.cos, np.arcsin, np.sqrt, np.minimum,
             lambda x: np.floor(x).astype(np.int64))  # fmt: skip


def utc_offset_hours(lon: Any, ops: Ops = SCALAR) -> Any:
    """Solar time zone from longitude, whole hours: 15 degrees per hour, rounded half up."""
    return ops.floor(lon / 15.0 + 0.5)


def local_hour_and_weekday(event_time_ms: Any, offset_h: Any) -> tuple[Any, Any]:
    """Local hour and weekday (0 = Monday) of an epoch-ms time at a whole-hour UTC offset."""
    local = event_time_ms + offset_h * HOUR_MS
    return (local // HOUR_MS) % 24, (local // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any, ops: Ops = SCALAR) -> Any:
    """Great-circle distance in km."""
    p1, p2 = ops.radians(lat1), ops.radians(lat2)
    dp, dl = p2 - p1, ops.radians(lon2 - lon1)
    a = ops.sin(dp / 2) ** 2 + ops.cos(p1) * ops.cos(p2) * ops.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * ops.arcsin(ops.sqrt(ops.minimum(1.0, a)))
