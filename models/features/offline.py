"""The offline feature path: a whole history through the same fold the stream job runs.

Rows are put in (card, event_time, transaction_id) order and each card's events are folded
with ``models.features.fold.step`` from an empty state, as the stream would see them arrive in time
order. Merchant windows come from per-(merchant, day) counts, vectorised: cumulative sums over
days give every window at once; the parity test proves them equal to ``fold.merchant_features``.

A transaction id seen twice counts once, as online: the repeat gets its first row's features.
A signals file's features (``models.features.entities``) follow the card's: attributes from the
``attr.<name>`` columns, entities folded over every row in (event_time, transaction_id) order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.features import definitions as f
from models.features import entities as en
from models.features.fold import CardEvent, CardState, ident, step
from services.core.currency import UNITS_PER_USD
from services.core.signals import EMPTY, ENTITY_FIELDS, Signals

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

REQUIRED_COLUMNS = (
    "transaction_id", "event_time", "card_id", "merchant_id", "merchant_category", "amount",
    "currency", "country", "channel", "device_id", "lat", "lon",
)  # fmt: skip


def attribute_column(name: str) -> str:
    """The frame column of a declared attribute (timestamps in epoch ms)."""
    return f"attr.{name}"


def compute(events: pd.DataFrame, signals: Signals = EMPTY) -> pd.DataFrame:
    """Features (``FEATURE_NAMES``, then the signals file's) for every row, aligned to ``events``.

    ``events`` has the Transaction columns (``event_time`` in epoch ms), an ``attr.<name>``
    column per declared attribute and, optionally, ``is_fraud`` and ``label_time`` (epoch ms
    when the label became known; unset: unlabelled).
    """
    names = list(f.FEATURE_NAMES + en.signal_feature_names(signals))
    missing = [c for c in REQUIRED_COLUMNS if c not in events.columns]
    missing += [attribute_column(a) for a in signals.attributes
                if attribute_column(a) not in events.columns]  # fmt: skip
    if missing:
        raise ValueError(f"missing columns: {', '.join(missing)}")
    if events.empty:
        return pd.DataFrame(columns=names, dtype=np.float64)
    order = np.lexsort(
        (events["transaction_id"].to_numpy(), events["event_time"].to_numpy(),
         events["card_id"].to_numpy())
    )  # fmt: skip
    rows = events.iloc[order].reset_index(drop=True)
    first = ~rows["transaction_id"].duplicated().to_numpy()
    unique = rows[first].reset_index(drop=True)
    features = _fold_cards(unique, _merchant_windows(unique))
    if signals is not EMPTY:
        features = np.hstack([features, _attributes(unique, signals), _entities(unique, signals)])
    position = np.cumsum(first) - 1  # each row's first occurrence among the unique rows
    result = np.empty((len(events), len(names)), dtype=np.float64)
    result[order] = features[position]
    return pd.DataFrame(result, index=events.index, columns=names)


def _usd(rows: pd.DataFrame) -> Floats:
    rates = rows["currency"].map(UNITS_PER_USD).fillna(1.0).to_numpy(np.float64)
    usd: Floats = rows["amount"].to_numpy(np.float64) / rates
    return usd


def _attributes(rows: pd.DataFrame, signals: Signals) -> Floats:
    """``entities.attribute_feature`` for every row at once."""
    columns = []
    for name, declared in signals.attributes.items():
        column = rows[attribute_column(name)]
        if declared.type == "category":
            codes, uniques = pd.factorize(column)
            table = np.array([en.category_code(str(u)) for u in uniques] + [np.nan])
            columns.append(table[codes])  # code -1 (missing): the last entry, NaN
        elif declared.type == "timestamp":
            at = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
            columns.append((rows["event_time"].to_numpy(np.float64) - at) / f.SECOND_MS)
        elif declared.type == "boolean":
            flags = column.map({True: 1.0, False: 0.0})  # anything else: missing
            columns.append(flags.astype(np.float64).to_numpy())
        else:  # a value that is not a number (a file of another declaration): missing
            columns.append(pd.to_numeric(column, errors="coerce").astype(np.float64).to_numpy())
    return np.column_stack(columns) if columns else np.empty((len(rows), 0))


def _entity_values(rows: pd.DataFrame, by: Sequence[str]) -> list[str | None]:
    """Each row's value of an entity (``entities.entity_value``), None where a part is missing."""
    parts = [rows[b if b in ENTITY_FIELDS else attribute_column(b)] for b in by]
    joined: list[str | None] = []
    for values in zip(*(p.astype(object).tolist() for p in parts), strict=True):
        ok = all(v is not None and v == v and v != "" for v in values)  # v == v: not NaN
        joined.append(en.SEPARATOR.join(map(en.entity_part, values)) if ok else None)
    return joined


def _entities(rows: pd.DataFrame, signals: Signals) -> Floats:
    """Entity and link features, every row folded in (event_time, transaction_id) order."""
    width = sum(len(en.entity_names(e)) for e in signals.entities)
    out = np.empty((len(rows), width), dtype=np.float64)
    if not width:
        return out
    values = list(zip(*(_entity_values(rows, e.by) for e in signals.entities), strict=True))
    order = np.lexsort((rows["transaction_id"].to_numpy(), rows["event_time"].to_numpy()))
    times = rows["event_time"].astype(np.int64).to_numpy()
    usd = _usd(rows)
    cards = rows["card_id"].astype(str).tolist()
    states: defaultdict[tuple[str, str], en.EntityState] = defaultdict(en.EntityState)
    links: defaultdict[str, dict[str, dict[int, int]]] = defaultdict(dict)
    for i in order.tolist():
        card = cards[i]
        out[i] = en.entity_row(signals, values[i], int(times[i]), float(usd[i]), ident(card),
                               states, links[card])  # fmt: skip
    return out


def _fold_cards(rows: pd.DataFrame, merchant: Floats) -> Floats:
    """Every row's features, each card folded in order from an empty state."""
    usd = _usd(rows).tolist()
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
