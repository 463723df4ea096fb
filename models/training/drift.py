"""Drift against a model's training data, by the population stability index (PSI).

At training, each feature and the score get fixed reference bins: the deciles of the data the
model learned from, and the share of rows in each (a missing value is its own bin). They are
stored in the version's metadata, so the stream, the lake and the model card all count into
the same bins, and PSI compares those counts with the reference shares:

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

0 means the same distribution; 0.1 is the usual "look at it" and 0.25 the usual "it moved"
(the thresholds of the alerts). Shares are floored at ``FLOOR`` so an empty bin gives a large
but finite term, not infinity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

BINS: Final = 10  # deciles
FLOOR: Final = 1e-4  # the smallest share a bin counts with
WARN: Final = 0.1
PAGE: Final = 0.25
CYCLIC: Final = frozenset({"hour_of_day", "day_of_week"})
"""Calendar features are not measured: within an hour or a day one value fills the window, so
their PSI against a whole training period is huge by construction (about 8 for the day of the
week on every single day of the real data: ``benchmarks/model_quality.py``)."""

Floats = npt.NDArray[np.floating[Any]]  # float32 (the model's input) or float64


def edges(values: Floats, bins: int = BINS) -> list[float]:
    """The inner cut points of ``values``' quantiles, ties merged (a feature with few distinct
    values gets fewer bins); missing values are left out (they have a bin of their own)."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return []
    cuts = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
    return [float(c) for c in np.unique(cuts) if c < present.max()]  # observed values only


def counts(cut: Sequence[float] | Floats, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Rows per bin: ``len(cut) + 1`` bins of values (``(-inf, c0], (c0, c1], …``), then the
    missing ones; one ``searchsorted`` and one ``bincount`` for a whole batch."""
    values = np.asarray(values, np.float64)
    missing = np.isnan(values)
    index = np.searchsorted(np.asarray(cut, np.float64), values, side="left")
    index[missing] = len(cut) + 1
    return np.bincount(index, minlength=len(cut) + 2).astype(np.int64)


def reference(names: Sequence[str], x: Floats, scores: Floats) -> dict[str, Any]:
    """The bins and shares of each feature (columns of ``x``) and of the score, for the
    version's metadata."""
    columns = {n: x[:, i] for i, n in enumerate(names) if n not in CYCLIC} | {"score": scores}
    result: dict[str, Any] = {}
    for name, values in columns.items():
        cut = edges(values.astype(np.float64))
        seen = counts(cut, values.astype(np.float64))
        result[name] = {"edges": cut, "shares": [float(s) for s in seen / max(1, seen.sum())]}
    return {"bins": BINS, "features": result}


def psi(expected: Sequence[float], actual: Sequence[int] | npt.NDArray[np.int64]) -> float:
    """PSI of observed counts against the reference shares of the same bins."""
    observed = np.asarray(actual, np.float64)
    if observed.shape != (len(expected),):
        raise ValueError(f"{observed.size} counts for {len(expected)} reference bins")
    total = observed.sum()
    if total == 0:
        return 0.0
    e = np.maximum(np.asarray(expected, np.float64), FLOOR)
    a = np.maximum(observed / total, FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def drift(reference_bins: Mapping[str, Any], columns: Mapping[str, Floats]) -> dict[str, float]:
    """PSI per column present in both (``columns``: name to values, e.g. from the lake)."""
    bins = reference_bins["features"]
    return {
        name: psi(bins[name]["shares"], counts(bins[name]["edges"], values.astype(np.float64)))
        for name, values in columns.items()
        if name in bins and name not in CYCLIC
    }
