"""How far a range of past transactions has moved from what a model version learned: PSI per
feature and for the score against the reference bins in the version's metadata
(``models.training.drift``), with the features computed as the job computes them (the
backtest's offline fold, history in place) and the score as the service serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.training import drift
from models.training.registry import Registry
from stream_jobs import backtest as bt


def level(value: float) -> str:
    """The alert a value would raise: ``page`` (0.25 and over), ``warn`` (0.1), or ``ok``."""
    return "page" if value >= drift.PAGE else "warn" if value >= drift.WARN else "ok"


def measure(
    registry: Registry, version: str, data: Path, window: bt.Range, mapping: Path | None = None
) -> dict[str, Any]:
    """PSI per feature and for the score over ``window``, most drifted first, JSON-able."""
    meta = registry.metadata(version)
    reference = meta.get("drift")
    if reference is None:
        raise bt.BacktestError(f"{version} has no drift reference (trained before versions kept "
                               "one): train a new version")  # fmt: skip
    scored = bt.scored(registry, version, data, window, mapping, labelled=False)
    x = scored.rows.astype(np.float32)  # as the model reads them, and as the bins were cut
    columns: dict[str, drift.Floats] = {n: x[:, i] for i, n in enumerate(meta["feature_names"])}
    columns["score"] = scored.scores
    bins = reference["features"]
    rows = []
    for name, value in sorted(drift.drift(reference, columns).items(), key=lambda kv: -kv[1]):
        seen = drift.counts(bins[name]["edges"], np.asarray(columns[name], np.float64))
        rows.append({
            "name": name, "psi": round(value, 6), "level": level(value),
            "edges": bins[name]["edges"], "reference": bins[name]["shares"],
            "observed": [round(float(c) / max(1, int(seen.sum())), 6) for c in seen],
        })  # fmt: skip
    return {
        "version": version,
        "range": {"from": bt.day(window.start_ms), "to": bt.day(window.end_ms)},
        "rows": len(scored.frame),
        "thresholds": {"warn": drift.WARN, "page": drift.PAGE},
        "score": next(r for r in rows if r["name"] == "score"),
        "features": [r for r in rows if r["name"] != "score"],
    }
