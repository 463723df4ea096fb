"""Calibrated fraud probabilities: an isotonic map from the model's raw score to P(fraud).

LightGBM trains with positives up-weighted (``scale_pos_weight``), so its score overstates
P(fraud); a threshold set by expected cost (probability x amount) needs the real probability.
The map is fitted on the validation split (after the training rows, before the evaluation
rows), stored in the version's metadata as breakpoints and applied with ``np.interp``, so
serving needs numpy alone: the scoring pod does not install scikit-learn (the train extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Probabilities = npt.NDArray[np.float64]
METHOD = "isotonic"
MAX_POINTS = 1000  # breakpoints kept in the metadata
ECE_BINS = 10


def fit(
    scores: npt.ArrayLike, labels: npt.ArrayLike, max_points: int = MAX_POINTS
) -> dict[str, Any]:
    """The isotonic map of ``scores`` to fraud rates, as metadata (plain floats, at most
    ``max_points`` breakpoints: evenly thinned, a subset of a monotone map stays monotone)."""
    from sklearn.isotonic import IsotonicRegression  # here only: serving imports this module

    model = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)
    model.fit(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    x, y = model.X_thresholds_, model.y_thresholds_
    if x.size > max_points:
        keep = np.unique(np.linspace(0, x.size - 1, max_points).round().astype(np.int64))
        x, y = x[keep], y[keep]
    return {"method": METHOD, "scores": x.tolist(), "probabilities": y.tolist()}


def checked(calibration: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The calibration with numpy breakpoints; ValueError unless it is a non-decreasing map
    into [0, 1]. Run once when a version loads, so a broken map is refused like any model
    that cannot load, and no batch converts lists."""
    if calibration is None:
        return None
    if calibration.get("method") != METHOD:
        raise ValueError(f"unknown calibration method {calibration.get('method')!r}")
    x = np.asarray(calibration["scores"], dtype=np.float64)
    y = np.asarray(calibration["probabilities"], dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError("calibration needs as many probabilities as scores, at least one")
    monotone = bool(np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0))
    if not monotone or not np.isfinite(x).all() or y[0] < 0 or y[-1] > 1:
        raise ValueError("calibration is not a non-decreasing map of scores into [0, 1]")
    return {"method": METHOD, "scores": x, "probabilities": y}


def calibrate(scores: npt.ArrayLike, calibration: Mapping[str, Any] | None) -> Probabilities:
    """P(fraud) for raw scores, clipped to the fitted range at both ends; without a
    calibration (versions from before it) the score itself."""
    raw = np.asarray(scores, dtype=np.float64)
    if calibration is None:
        return raw
    return np.interp(raw, calibration["scores"], calibration["probabilities"])


def expected_calibration_error(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    bins: int = ECE_BINS,
    weights: npt.ArrayLike | None = None,
) -> float:
    """|mean probability - fraud rate| per equal-width bin of [0, 1], weighted by its rows
    (``weights``: each row's, e.g. inverse-propensity weights; default 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    gaps = np.bincount(which, weights=w * (p - y), minlength=bins)  # weight x (p - rate)
    return float(np.abs(gaps).sum() / w.sum())


def brier(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """Mean squared difference between probability and outcome (weighted by ``weights``)."""
    p = np.asarray(probabilities, dtype=np.float64)
    squared = (p - np.asarray(labels, dtype=np.float64)) ** 2
    return float(np.average(squared, weights=weights))


def reliability(
    labels: npt.ArrayLike, scores: npt.ArrayLike, calibration: Mapping[str, Any] | None
) -> dict[str, float]:
    """ECE and Brier score of the calibrated probability, and of the raw score to compare."""
    calibrated = calibrate(scores, calibration)
    return {
        "ece": round(expected_calibration_error(calibrated, labels), 6),
        "brier": round(brier(calibrated, labels), 6),
        "ece_uncalibrated": round(expected_calibration_error(scores, labels), 6),
        "brier_uncalibrated": round(brier(scores, labels), 6),
    }
