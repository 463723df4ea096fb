"""Training: no leakage across the time split, ONNX equals LightGBM, reason codes, the
calibration of the score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import errors
from models.features.definitions import FEATURE_NAMES, LABEL_DELAY_MS
from models.training import calibration, export
from models.training.datasets import Dataset, frame_from_transactions
from models.training.explain import top_reasons
from models.training.trainer import (
    TrainConfig,
    Trained,
    feature_matrix,
    scores_for,
    time_split,
    train,
)
from services.generator import GeneratorConfig, generate

FAST = TrainConfig(max_rounds=60, early_stopping_rounds=20)


def small_dataset(seed: int = 3, count: int = 60_000) -> Dataset:
    items = list(generate(GeneratorConfig(seed=seed, customers=1_500, fraud_rate=0.02), count))
    frame = frame_from_transactions([i.transaction for i in items])
    frame["is_fraud"] = [i.is_fraud for i in items]
    frame["label_time"] = frame["event_time"] + LABEL_DELAY_MS
    return Dataset("transactions", frame, fingerprint="test", source="generated")


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return small_dataset()


@pytest.fixture(scope="module")
def trained(dataset: Dataset) -> Trained:
    return train(dataset, FAST)


def test_no_evaluation_row_is_earlier_than_any_training_row() -> None:
    rng = np.random.default_rng(0)
    times = rng.integers(0, 1_000_000, 10_000)
    times[:500] = 424_242  # a block of equal times must not straddle the cut
    split = time_split(times, TrainConfig())
    assert times[split.train].max() <= times[split.valid].min()
    assert times[split.valid].max() <= times[split.evaluation].min()
    assert times[split.train].max() < times[split.evaluation].min()
    assert split.train.size + split.valid.size + split.evaluation.size == times.size
    assert 0.15 < split.evaluation.size / times.size < 0.25


def test_trained_model_records_a_leak_free_split(trained: Trained) -> None:
    data = trained.metadata["data"]
    assert data["train_rows"] + data["valid_rows"] + data["eval_rows"] == data["rows"]
    assert trained.metadata["feature_names"] == list(FEATURE_NAMES)
    assert trained.metrics.pr_auc > 0.5  # a model that learned something
    assert 0 < trained.metrics.decline.fpr <= 0.001 < trained.metrics.review.fpr <= 0.01


def test_calibration_is_fitted_on_the_validation_split_and_measured_on_evaluation(
    dataset: Dataset, trained: Trained
) -> None:
    meta = json.loads(json.dumps(trained.metadata))  # what the registry stores, plain JSON
    stored = meta["calibration"]
    assert stored["method"] == "isotonic"
    assert 0 < len(stored["scores"]) == len(stored["probabilities"]) <= calibration.MAX_POINTS
    assert calibration.checked(stored) is not None  # the scoring service will load it
    valid = time_split(dataset.frame["event_time"], FAST).valid  # later than training rows
    labels = dataset.frame["is_fraud"].to_numpy(bool)[valid]
    assert stored == calibration.fit(scores_for(feature_matrix(dataset)[valid], trained.onnx),
                                     labels)  # fmt: skip
    figures = meta["metrics"]["calibration"]
    assert set(figures) == {"ece", "brier", "ece_uncalibrated", "brier_uncalibrated"}
    assert figures == calibration.reliability(trained.eval_labels, trained.eval_scores, stored)
    assert figures["ece"] < 0.01  # the latest slice's probabilities match its fraud rate


def test_onnx_scores_equal_lightgbm_scores(trained: Trained) -> None:
    rows = np.random.default_rng(1).normal(0, 50, (2_000, len(FEATURE_NAMES))).astype(np.float32)
    rows[::5, 3] = np.nan  # missing values take the same branch in both
    onnx = export.fraud_probability(export.session(trained.onnx), rows)
    assert np.abs(onnx - trained.booster.predict(rows)).max() <= export.MAX_DIFFERENCE


def test_export_is_refused_when_onnx_disagrees(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.ones((10, len(FEATURE_NAMES)), dtype=np.float32)
    monkeypatch.setattr(export, "MAX_DIFFERENCE", -1.0)  # any difference at all now fails
    with pytest.raises(errors.ExportError, match="differ"):
        export.to_onnx(trained.booster, rows)


def test_path_contributions_add_up_and_name_treeshap_drivers() -> None:
    import lightgbm as lgb

    from models.training.explain import PathExplainer
    from models.training.registry import DEFAULT_REGISTRY

    booster = lgb.Booster(model_file=str(DEFAULT_REGISTRY / "versions" / "v0001" / "model.txt"))
    x = feature_matrix(small_dataset(seed=9, count=20_000))
    stored = (DEFAULT_REGISTRY / "versions" / "v0001" / "explainer.npz").read_bytes()
    explainer = PathExplainer.from_bytes(booster, FEATURE_NAMES, stored)
    rebuilt = PathExplainer.build(booster, FEATURE_NAMES)
    assert np.array_equal(explainer.table, rebuilt.table)  # what training stored is current
    sample = x[:500]
    total = explainer.contributions(sample).sum(axis=1) + explainer.baseline
    assert np.abs(total - booster.predict(sample, raw_score=True)).max() < 1e-6
    # On the rows that get explained (the highest scores), the top reason is among exact
    # TreeSHAP's top three: a different attribution that names the same drivers.
    high = x[np.argsort(-np.asarray(booster.predict(x)))[:100]]
    exact = np.asarray(booster.predict(high, pred_contrib=True))[:, :-1]
    path_top = explainer.contributions(high).argmax(axis=1)
    agree = np.mean([path_top[i] in np.argsort(-exact[i])[:3] for i in range(len(high))])
    assert agree >= 0.9


def test_reason_codes_name_the_top_features(trained: Trained) -> None:
    rows = np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32)
    rows[1, FEATURE_NAMES.index("tiny_count_10m")] = 15  # a card-testing burst
    rows[1, FEATURE_NAMES.index("count_1h")] = 15
    reasons = top_reasons(trained.booster, rows, FEATURE_NAMES, k=3)
    assert len(reasons) == 2
    assert all(set(r) <= set(FEATURE_NAMES) and len(r) <= 3 for r in reasons)
    assert reasons[1]  # something pushed the burst's score up


def test_reasons_in_blocks_equal_reasons_row_by_row(trained: Trained) -> None:
    """Explained a block of rows at a time (memory bounded), on one thread or all: the
    same reasons as each row alone."""
    from models.training.explain import PathExplainer

    rng = np.random.default_rng(4)
    shape = (PathExplainer.BLOCK * 2 + 7, len(FEATURE_NAMES))
    rows = rng.uniform(0, 20, shape).astype(np.float32)
    one = PathExplainer.build(trained.booster, FEATURE_NAMES, threads=1)
    every = PathExplainer.build(trained.booster, FEATURE_NAMES)
    alone = [one.top(rows[i : i + 1])[0] for i in range(len(rows))]
    assert one.top(rows) == alone
    assert every.top(rows) == alone


def test_a_split_without_fraud_is_refused() -> None:
    dataset = small_dataset(count=5_000)
    dataset.frame["is_fraud"] = False
    dataset.frame.loc[0, "is_fraud"] = True  # one positive, in the earliest rows only
    with pytest.raises(ValueError, match="single class"):
        train(dataset, FAST)


def test_float32_thresholds_change_nothing_for_lightgbm() -> None:
    import lightgbm as lgb

    from models.training.trainer import _servable

    rng = np.random.default_rng(2)
    # Values a float32 ulp apart make double thresholds that float32 cannot hold.
    x = (1e4 + rng.integers(0, 2_000, (5_000, 3)) * np.float32(1e4) * 2**-23).astype(np.float32)
    y = rng.random(5_000) < 0.3
    booster = lgb.train({"objective": "binary", "verbosity": -1, "min_child_samples": 5},
                        lgb.Dataset(x, y), num_boost_round=30)  # fmt: skip
    servable = _servable(booster)
    assert np.array_equal(servable.predict(x), booster.predict(x))
    onnx = export.fraud_probability(export.session(export.to_onnx(servable, x)), x)
    assert np.abs(onnx - servable.predict(x)).max() <= export.MAX_DIFFERENCE


def test_a_version_carries_its_drift_reference(trained: Trained) -> None:
    """Every feature but the calendar ones, and the score, have reference bins in the
    metadata (plain JSON), and the scores the reference was taken from show no drift."""
    from models.training import drift

    ref = json.loads(json.dumps(trained.metadata["drift"]))
    measured = set(trained.metadata["feature_names"]) - drift.CYCLIC
    assert set(ref["features"]) == {*measured, "score"}
    assert set(trained.metadata["feature_names"]) >= drift.CYCLIC  # left out, not missing
    score = ref["features"]["score"]
    assert sum(score["shares"]) == pytest.approx(1.0)
    assert drift.psi(score["shares"], drift.counts(score["edges"], trained.eval_scores)) < 1e-9
