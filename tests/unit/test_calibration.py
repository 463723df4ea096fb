"""Calibration: the isotonic map is a monotone map into [0, 1] that serving applies with numpy
alone, and the reliability figures tell a calibrated sample from a miscalibrated one."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.isotonic import IsotonicRegression

from models.training.calibration import (
    brier,
    calibrate,
    checked,
    expected_calibration_error,
    fit,
    reliability,
)

Sample = tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]


def _sample(rows: int, seed: int = 0) -> Sample:
    """True probabilities and outcomes drawn from them: a perfectly calibrated sample."""
    rng = np.random.default_rng(seed)
    p = rng.random(rows)
    return p, rng.random(rows) < p


def test_calibrate_is_monotone_into_0_1_and_the_identity_without_calibration() -> None:
    p, y = _sample(20_000)
    calibration = fit(np.sqrt(p), y)  # an inflated score, like scale_pos_weight's
    grid = np.linspace(-0.5, 1.5, 4_001)  # beyond the fitted range at both ends: clipped
    calibrated = calibrate(grid, calibration)
    assert np.all(np.diff(calibrated) >= 0)
    assert calibrated.min() >= 0
    assert calibrated.max() <= 1
    assert calibrated[0] == calibration["probabilities"][0]
    assert calibrated[-1] == calibration["probabilities"][-1]
    assert np.array_equal(calibrate(grid, None), grid)


def test_the_stored_breakpoints_reproduce_scikit_learn_and_are_plain_floats() -> None:
    p, y = _sample(20_000, seed=1)
    calibration = fit(p, y)
    assert calibration["method"] == "isotonic"
    assert all(type(v) is float for v in calibration["scores"] + calibration["probabilities"])
    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    grid = np.linspace(-0.1, 1.1, 2_001)
    assert np.abs(calibrate(grid, calibration) - fitted.predict(grid)).max() < 1e-12


def test_thinned_breakpoints_stay_a_monotone_map_with_both_ends() -> None:
    p, y = _sample(50_000, seed=2)
    full = fit(p, y, max_points=10**9)
    thin = fit(p, y, max_points=20)
    assert len(full["scores"]) > 20 >= len(thin["scores"])
    assert (thin["scores"][0], thin["scores"][-1]) == (full["scores"][0], full["scores"][-1])
    assert checked(thin) is not None  # strictly increasing scores, non-decreasing in [0, 1]


def test_ece_is_small_when_calibrated_and_large_when_not() -> None:
    p, y = _sample(100_000, seed=3)
    assert expected_calibration_error(p, y) < 0.01
    inflated = np.sqrt(p)  # negative control: E[sqrt(p) - p] = 1/6 for uniform p
    assert expected_calibration_error(inflated, y) > 0.12
    assert brier(inflated, y) > brier(p, y)


def test_the_fitted_map_repairs_an_inflated_score_on_later_rows() -> None:
    p, y = _sample(100_000, seed=4)
    score = np.sqrt(p)
    calibration = fit(score[:50_000], y[:50_000])  # fitted on one slice, measured on another
    figures = reliability(y[50_000:], score[50_000:], calibration)
    assert figures["ece"] < 0.02 < 0.12 < figures["ece_uncalibrated"]
    assert figures["brier"] < figures["brier_uncalibrated"]


@pytest.mark.parametrize(
    "broken",
    [
        {"method": "platt", "scores": [0.0, 1.0], "probabilities": [0.0, 1.0]},
        {"method": "isotonic", "scores": [0.0, 1.0], "probabilities": [0.0]},
        {"method": "isotonic", "scores": [], "probabilities": []},
        {"method": "isotonic", "scores": [1.0, 0.0], "probabilities": [0.0, 1.0]},
        {"method": "isotonic", "scores": [0.0, 1.0], "probabilities": [0.6, 0.4]},
        {"method": "isotonic", "scores": [0.0, 1.0], "probabilities": [0.0, 1.5]},
        {"method": "isotonic", "scores": [0.0, 1.0], "probabilities": [float("nan"), 1.0]},
    ],
)
def test_a_broken_calibration_is_refused(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="calibration"):
        checked(broken)


def test_checked_gives_arrays_that_calibrate_as_the_stored_lists() -> None:
    stored = {"method": "isotonic", "scores": [0.1, 0.5, 0.9], "probabilities": [0.0, 0.2, 0.7]}
    ready = checked(stored)
    assert ready is not None
    assert isinstance(ready["scores"], np.ndarray)
    scores = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
    assert np.array_equal(calibrate(scores, ready), calibrate(scores, stored))
    assert calibrate(scores, stored).tolist() == pytest.approx([0.0, 0.1, 0.2, 0.45, 0.7])
    assert checked(None) is None
