"""The offline feature path: a whole history through the same fold the stream job runs.

Rows are put in (card, event_time, transaction_id) order and each card's events are folded
with ``models.fold.step`` from an empty state, as the stream would see them arrive in time
order. Merchant windows come from per-(merchant, day) counts, vectorised: cumulative sums over
days give every window at once; the parity test proves them equal to ``fold.merchant_features``.

A transaction id seen twice counts once, as online: the repeat gets its first row's features.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from models import features as f
from models.fold import CardEvent, CardState, ident, step
from services.core.currency import UNITS_PER_USD

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

REQUIRED_COLUMNS = (
    "transaction_id", "event_time", "card_id", "merchant_id", "merchant_category", "amount",
    "currency", "country", "channel", "device_id", "lat", "lon",
)  # fmt: skip


def compute(events: pd.DataFrame) -> pd.DataFrame:
    """Features (columns in ``FEATURE_NAMES`` order) for every row, aligned to ``events``.

    ``events`` has the Transaction columns (``event_time`` in epoch ms) and, optionally,
    ``is_fraud`` and ``label_time`` (epoch ms when the label became known; unset: unlabelled).
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
    first = ~rows["transaction_id"].duplicated().to_numpy()
    unique = rows[first].reset_index(drop=True)
    features = _fold_cards(unique, _merchant_windows(unique))
    position = np.cumsum(first) - 1  # each row's first occurrence among the unique rows
    result = np.empty((len(events), len(f.FEATURE_NAMES)), dtype=np.float64)
    result[order] = features[position]
    return pd.DataFrame(result, index=events.index, columns=list(f.FEATURE_NAMES))


def _fold_cards(rows: pd.DataFrame, merchant: Floats) -> Floats:
    """Every row's features, each card folded in order from an empty state."""
    rates = rows["currency"].map(UNITS_PER_USD).fillna(1.0).to_numpy(np.float64)
    usd = (rows["amount"].to_numpy(np.float64) / rates).tolist()
    card = pd.factorize(rows["card_id"])[0].tolist()
    merchant_codes, merchant_ids = pd.factorize(rows["merchant_id"])
    merchants = [ident(str(m)) for m in merchant_ids]
    device_codes, device_ids = pd.factorize(rows["device_id"])  # null: -1
    devices = [ident(str(d)) for d in device_ids]
    lat, lon = (
        rows[c].astype(object).where(rows[c].notna(), None).tolist() for c in ("lat", "lon")
    )
    columns = zip(
        rows["event_time"].astype(np.int64).tolist(), usd,
        (merchants[m] for m in merchant_codes.tolist()), rows["country"].tolist(),
        (devices[d] if d >= 0 else None for d in device_codes.tolist()), lat, lon,
        rows["merchant_category"].tolist(), rows["channel"].tolist(), strict=True,
    )  # fmt: skip
    out = []
    state, current = CardState(), -1
    for i, (values, merchant_row) in enumerate(zip(columns, merchant.tolist(), strict=True)):
        if card[i] != current:
            state, current = CardState(), card[i]
        out.append(step(state, CardEvent(*values), merchant_row))
    return np.asarray(out, dtype=np.float64)


def _merchant_windows(rows: pd.DataFrame) -> Floats:
    """``fold.merchant_features`` for every row at once: counts per (merchant, day) summed over
    each window by differences of cumulative sums along the days."""
    merchant = pd.factorize(rows["merchant_id"])[0]
    day = rows["event_time"].to_numpy(np.int64) // f.DAY_MS
    reach = max(f.MERCHANT_DAYS) + f.MERCHANT_DELAY_DAYS + 1
    first_day = int(day.min()) - reach
    column = day - first_day
    width = int(column.max()) + 1
    fraud = np.zeros(len(rows), dtype=bool)
    if "is_fraud" in rows.columns and "label_time" in rows.columns:
        fraud = (
            rows["is_fraud"].fillna(False).to_numpy(bool) & rows["label_time"].notna().to_numpy()
        )
    grids = []
    for mask in (np.ones(len(rows), dtype=bool), fraud):
        grid = np.zeros((int(merchant.max()) + 1, width + 1), dtype=np.int64)
        np.add.at(grid, (merchant[mask], column[mask] + 1), 1)  # column k + 1: day k
        grids.append(np.cumsum(grid, axis=1))  # [m, k]: the merchant's count before day k
    end = column - f.MERCHANT_DELAY_DAYS  # windows end before this day
    counts, risks = [], []
    for days in f.MERCHANT_DAYS:
        n, bad = (g[merchant, end] - g[merchant, end - days] for g in grids)
        counts.append(n.astype(np.float64))
        risks.append(f.merchant_risk(bad.astype(np.float64), n.astype(np.float64)))
    return np.column_stack(counts + risks)
