"""The one definition of every model feature: names, order, meaning, windows and constants.

``models.features.fold`` computes them, one card event at a time, for both paths:
``models.online.store`` (the stream job, state in Redis) and ``models.features.offline``
(training over a whole history). A
parity test replays a data set through both and names any feature that differs.

Semantics:
- Events of a card are folded in arrival order (offline: by (event_time, transaction_id)).
  Windows are in event time, half-open ``(t - W, t]``, and include the current event; the
  30-day statistics and "previous" exclude it.
- 1 min, 10 min and 1 h windows are exact over the card's last ``fold.RING`` events of the
  hour; 24 h is the current hour and the 23 before it; 7 and 30 days are the current UTC day
  and the 6 or 29 before it.
- Merchant (terminal) windows count whole days ending before ``MERCHANT_DELAY_DAYS`` ago,
  when their labels are known; only confirmed labels count, a transaction's latest one wins.
- Amounts are compared in USD at the reference rates of ``services.core.currency``.
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
SPENDING_DAYS: Final = (7, 30)  # customer-spending windows in days (1 day: the 24 h window)
MERCHANT_DAYS: Final = (1, 7, 30)  # merchant (terminal) windows in whole days ...
MERCHANT_DELAY_DAYS: Final = 7  # ... ending this many days before the event's day
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
    *(
        Feature(f"{stat}_{d}d", f"{stat} of the card's amounts (USD) in {d} days, this included")
        for d in SPENDING_DAYS
        for stat in ("count", "mean")
    ),
    Feature("amount_to_mean_30d", "amount / mean of the card's prior 30-day amounts (1: none)"),
    Feature("amount_zscore_30d", "(amount - mean) / max(std, 5% of mean, 0.01) over 30 days"),
    Feature("seconds_since_prev", "since the card's latest event (30 days if none; late: 0)"),
    Feature("distinct_merchants_24h", "distinct merchants of the card in 24 h, this one included"),
    Feature("distinct_countries_24h", "distinct countries of the card in 24 h, this one included"),
    Feature("distinct_devices_24h", "distinct devices of the card in 24 h, this one included"),
    Feature("distance_from_prev_km", "km from the card's latest located event (0: unknown)"),
    Feature("speed_from_prev_kmh", "that distance over the time since, at least a minute"),
    Feature("hour_of_day", "local hour: offset from the longitude (or the last known one)"),
    Feature("day_of_week", "local day of week, Monday = 0"),
    Feature("new_device", "1 if the device is not among the card's 30-day history (with history)"),
    Feature("new_country", "1 if the country is not among the card's 30-day history"),
    Feature("mcc_risk", "prior risk of the merchant category"),
    *(
        Feature(f"merchant_tx_{d}d", f"the merchant's transactions in {d} days, a week ago")
        for d in MERCHANT_DAYS
    ),
    *(
        Feature(f"merchant_risk_{d}d", f"fraud share of those {d} days' transactions")
        for d in MERCHANT_DAYS
    ),
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


def merchant_risk(frauds: _Number, transactions: _Number) -> _Number:
    """Fraud share of a merchant's transactions (0 with none), clipped to 0..1: a label can
    arrive for a transaction this store never counted."""
    if isinstance(transactions, np.ndarray):
        shares: npt.NDArray[np.float64] = np.clip(frauds / np.maximum(transactions, 1), 0.0, 1.0)
        return shares
    return min(max(frauds / max(transactions, 1), 0.0), 1.0)


def zscore(amount: float, mean: float, std: float) -> float:
    """Distance from the card's mean in its own spread, the spread floored so that a card
    with identical amounts does not make every new amount look infinitely unusual."""
    return (amount - mean) / max(std, 0.05 * mean, 0.01)


@dataclass(frozen=True)
class Ops:
    """The math the location helpers use: ``SCALAR`` for one event (online), ``VECTOR`` for
    whole columns (``models.features.offline``), so both paths run the same formulas."""

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
