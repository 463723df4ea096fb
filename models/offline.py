"""The offline feature implementation: every feature for a whole history at once, vectorised.

Rows are put in (card, event_time, transaction_id) order; every window is then an index range
``[start, i]`` found with one ``searchsorted`` on a (card, time) key, and sums, counts and
maxima over it come from per-card prefix sums and a sparse table. Distinct counts expand each
24 h window into (row, member) pairs. Nothing loops over rows in Python.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from models import features as f
from services.core.currency import UNITS_PER_USD

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
_TIME_BITS = 37  # 2**37 ms is 4.3 years: the span one key can hold beside a card code

REQUIRED_COLUMNS = (
    "transaction_id", "event_time", "card_id", "merchant_id", "merchant_category", "amount",
    "currency", "country", "channel", "device_id", "lat", "lon",
)  # fmt: skip


def compute(events: pd.DataFrame) -> pd.DataFrame:
    """Features (columns in ``FEATURE_NAMES`` order) for every row, aligned to ``events``.

    ``events`` has the Transaction columns (``event_time`` in epoch ms) and, optionally,
    ``is_fraud`` and ``label_time`` (epoch ms when the label became known).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"missing columns: {', '.join(missing)}")
    if events.empty:
        return pd.DataFrame(columns=list(f.FEATURE_NAMES), dtype=np.float64)
    order = np.lexsort(
        (events["transaction_id"].to_numpy(), events["event_time"].to_numpy(),
         events["card_id"].to_numpy())
    )  # fmt: skip
    rows = events.iloc[order].reset_index(drop=True)
    out = _sorted_features(rows)
    result = pd.DataFrame(index=events.index, columns=list(f.FEATURE_NAMES), dtype=np.float64)
    result.iloc[order] = np.column_stack([out[name] for name in f.FEATURE_NAMES])
    return result


def _sorted_features(rows: pd.DataFrame) -> dict[str, Floats]:
    n = len(rows)
    t = rows["event_time"].to_numpy(np.int64)
    card = pd.factorize(rows["card_id"])[0].astype(np.int64)
    span = int(t.max() - t.min()) + f.HISTORY_MS
    if span >= 2**_TIME_BITS or card.max() >= 2 ** (63 - _TIME_BITS):
        raise ValueError("history too long or too many cards for one pass: split the data")
    key = (card << _TIME_BITS) + (t - t.min())
    idx = np.arange(n)
    rates = rows["currency"].map(UNITS_PER_USD).fillna(1.0).to_numpy(np.float64)
    usd = rows["amount"].to_numpy(np.float64) / rates

    def start(window_ms: int) -> Ints:
        """First row of the window (t - W, t] of each row's card."""
        first: Ints = np.searchsorted(key, key - window_ms, side="right").astype(np.int64)
        return first

    out: dict[str, Floats] = {"amount_usd": usd}
    cards = pd.Series(card)
    cum = pd.Series(usd).groupby(cards).cumsum().to_numpy()
    cum_sq = pd.Series(usd * usd).groupby(cards).cumsum().to_numpy()
    before = cum - usd  # the card's sum strictly before each row
    before_sq = cum_sq - usd * usd
    longest = 1
    for name, window in f.VELOCITY_WINDOWS.items():
        s = start(window)
        count = (idx - s + 1).astype(np.float64)
        total = cum - before[s]
        out[f"count_{name}"], out[f"sum_{name}"] = count, total
        out[f"mean_{name}"] = total / count
        longest = max(longest, int((idx - s).max()) + 1)
        out[f"max_{name}"] = _range_max(usd, s, idx, longest)

    s30 = start(f.HISTORY_MS)
    prior = (idx - s30).astype(np.float64)
    has_prior = prior > 0
    safe = np.where(has_prior, prior, 1.0)
    mean30 = np.where(has_prior, (before - before[s30]) / safe, 0.0)
    var30 = np.maximum((before_sq - before_sq[s30]) / safe - mean30 * mean30, 0.0)
    std30 = np.sqrt(var30)
    out["history_count_30d"] = prior
    out["amount_to_mean_30d"] = np.where(has_prior, usd / np.where(has_prior, mean30, 1.0), 1.0)
    floor = np.maximum(np.maximum(std30, 0.05 * mean30), 0.01)
    out["amount_zscore_30d"] = np.where(prior >= 2, (usd - mean30) / floor, 0.0)

    has_prev = has_prior  # the previous row is in the same card and within 30 days
    prev = np.maximum(idx - 1, 0)
    gap_s = (t - t[prev]) / f.SECOND_MS
    out["seconds_since_prev"] = np.where(has_prev, gap_s, f.NO_PREVIOUS_S)

    _location_features(rows, t, s30, out)
    s24 = start(f.DISTINCT_WINDOW_MS)
    for column, name in (("merchant_id", "merchants"), ("country", "countries"),
                         ("device_id", "devices")):  # fmt: skip
        out[f"distinct_{name}_24h"] = _distinct_in_window(rows[column], s24)
    out["new_device"] = _new_value(rows, "device_id", card, s30, has_prior)
    out["new_country"] = _new_value(rows, "country", card, s30, has_prior)
    risk = rows["merchant_category"].map(f.MCC_RISK).fillna(f.MCC_RISK_DEFAULT)
    out["mcc_risk"] = risk.to_numpy(np.float64)
    out["merchant_fraud_rate"] = _merchant_fraud_rate(rows, t)
    tiny = (usd <= f.TINY_USD).astype(np.float64)
    tiny_cum = pd.Series(tiny).groupby(cards).cumsum().to_numpy()
    s10 = start(f.TINY_WINDOW_MS)
    out["tiny_count_10m"] = tiny_cum - (tiny_cum[s10] - tiny[s10])
    channel = rows["channel"].to_numpy()
    out["is_ecommerce"] = (channel == "ecommerce").astype(np.float64)
    out["is_atm"] = (channel == "atm").astype(np.float64)
    return out


def _range_max(values: Floats, lo: Ints, hi: Ints, longest: int) -> Floats:
    """max(values[lo[i] : hi[i] + 1]) for every i, with a sparse table (O(n log longest))."""
    table = [values]
    width = 1
    while width * 2 <= longest:
        last = table[-1]
        table.append(np.maximum(last, np.concatenate([last[width:], last[-width:]])))
        width *= 2
    length = hi - lo + 1
    level = np.floor(np.log2(length)).astype(np.int64)
    result = np.empty_like(values)
    for k in np.unique(level):
        rows = level == k
        span = 1 << int(k)
        result[rows] = np.maximum(table[k][lo[rows]], table[k][hi[rows] - span + 1])
    return result


def _location_features(rows: pd.DataFrame, t: Ints, s30: Ints, out: dict[str, Floats]) -> None:
    """Distance and speed from the previous located event; local hour and weekday."""
    lat = rows["lat"].to_numpy(np.float64)
    lon = rows["lon"].to_numpy(np.float64)
    n = len(rows)
    idx = np.arange(n)
    located = ~np.isnan(lat) & ~np.isnan(lon)
    last_located = np.maximum.accumulate(np.where(located, idx, -1))
    prev = np.concatenate([[-1], last_located[:-1]])  # last located row strictly before
    valid = prev >= s30  # same card, within 30 days (s30 never leaves the card)
    p = np.where(valid, prev, 0)
    both = valid & located
    distance = np.where(both, f.haversine_km(lat, lon, lat[p], lon[p], f.VECTOR), 0.0)
    hours = np.maximum((t - t[p]) / f.HOUR_MS, f.MIN_TRAVEL_H)
    out["distance_from_prev_km"] = distance
    out["speed_from_prev_kmh"] = np.where(both, distance / hours, 0.0)
    known_lon = np.where(located, lon, np.where(valid, lon[p], 0.0))
    hour, weekday = f.local_hour_and_weekday(t, f.utc_offset_hours(known_lon, f.VECTOR))
    out["hour_of_day"] = hour.astype(np.float64)
    out["day_of_week"] = weekday.astype(np.float64)


def _distinct_in_window(values: pd.Series, start: Ints) -> Floats:
    """Distinct non-null values among rows ``[start[i], i]``, for every i."""
    codes = pd.factorize(values)[0].astype(np.int64)  # null -> -1
    n = len(codes)
    length = np.arange(n) - start + 1
    row = np.repeat(np.arange(n), length)
    offset = np.arange(row.size) - np.repeat(np.cumsum(length) - length, length)
    member = codes[start[row] + offset]
    keep = member >= 0
    pairs = np.unique(row[keep] * (codes.max() + 2) + member[keep])
    counts: Floats = np.bincount(pairs // (codes.max() + 2), minlength=n).astype(np.float64)
    return counts


def _new_value(
    rows: pd.DataFrame, column: str, card: Ints, s30: Ints, has_prior: npt.NDArray[np.bool_]
) -> Floats:
    """1 where the value is set, the card has 30-day history, and the value is not in it."""
    values = rows[column]
    present = values.notna().to_numpy()
    codes = pd.factorize(values)[0].astype(np.int64)
    idx = pd.Series(np.arange(len(rows)))
    prev_same = idx.groupby([card, codes]).shift(1).fillna(-1).to_numpy(np.int64)
    seen = prev_same >= s30
    flags: Floats = (present & has_prior & ~seen).astype(np.float64)
    return flags


def _merchant_fraud_rate(rows: pd.DataFrame, t: Ints) -> Floats:
    """Smoothed fraud rate from the merchant's labels with ``label_time <= t``."""
    if "is_fraud" not in rows.columns or "label_time" not in rows.columns:
        return np.full(len(rows), f.merchant_fraud_rate(0.0, 0.0))
    merchant = pd.factorize(rows["merchant_id"])[0].astype(np.int64)
    labelled = rows["is_fraud"].notna().to_numpy() & rows["label_time"].notna().to_numpy()
    label_time = rows["label_time"].to_numpy(np.float64)
    base = int(min(t.min(), np.nanmin(label_time) if labelled.any() else t.min()))

    def known(mask: npt.NDArray[np.bool_]) -> Floats:
        keys = np.sort((merchant[mask] << 40) + (label_time[mask].astype(np.int64) - base))
        upto = np.searchsorted(keys, (merchant << 40) + (t - base), side="right")
        first = np.searchsorted(keys, merchant << 40, side="left")
        counts: Floats = (upto - first).astype(np.float64)
        return counts

    fraud_mask = labelled & (rows["is_fraud"].fillna(False).to_numpy(bool))
    return f.merchant_fraud_rate(known(fraud_mask), known(labelled))
