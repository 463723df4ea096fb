"""Training: features from the shared definition, a time-based split, LightGBM, ONNX export.

The later part of the history (by event time) is held out for evaluation and never seen in
training; early stopping watches the latest slice of the training period, not the
evaluation split. Positives are up-weighted by the square root of the class ratio (full
re-weighting inflates scores and hurts precision at the low false-positive rates that matter).
That weighting still inflates the score, so an isotonic map fitted on the validation split
turns it into a calibrated probability, whose reliability is measured on the evaluation split.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from models.features import offline
from models.training import calibration, drift, export
from models.training.datasets import Dataset
from models.training.metrics import Metrics, evaluate, pr_curve

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the model; recorded in its metadata."""

    seed: int = 7
    eval_fraction: float = 0.2  # the latest share of rows (by event time) held out
    valid_fraction: float = 0.15  # the latest share of the training rows, for early stopping
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 40
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    max_rounds: int = 1000
    early_stopping_rounds: int = 50
    threads: int = 2


@dataclass(frozen=True)
class Split:
    train: npt.NDArray[np.int64]
    valid: npt.NDArray[np.int64]
    evaluation: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Trained:
    booster: lgb.Booster
    onnx: bytes
    metrics: Metrics
    eval_labels: npt.NDArray[np.bool_]
    eval_scores: npt.NDArray[np.float64]
    metadata: dict[str, Any]


def time_split(event_time: npt.ArrayLike, config: TrainConfig) -> Split:
    """Index sets ordered in time: every evaluation row is at or after every training row."""
    t = np.asarray(event_time, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    cut = _cut(t[order], 1 - config.eval_fraction)
    train_part, evaluation = order[:cut], order[cut:]
    valid_cut = _cut(t[train_part], 1 - config.valid_fraction)
    return Split(train_part[:valid_cut], train_part[valid_cut:], evaluation)


def _cut(sorted_times: npt.NDArray[np.int64], share: float) -> int:
    """A position near ``share`` that does not split rows with the same time."""
    position = int(len(sorted_times) * share)
    if position >= len(sorted_times):
        return len(sorted_times)
    return int(np.searchsorted(sorted_times, sorted_times[position], side="left"))


def feature_matrix(dataset: Dataset) -> Matrix:
    """The model's input: the shared features in their defined order, as float32."""
    if dataset.kind == "transactions":
        frame = offline.compute(dataset.frame, dataset.signals)
    else:
        frame = dataset.frame[list(dataset.feature_names)]
    matrix: Matrix = frame.to_numpy(np.float32)
    return matrix


def _params(config: TrainConfig, ratio: float) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "average_precision",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_child_samples": config.min_child_samples,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1,
        "scale_pos_weight": math.sqrt(ratio),
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.threads,
        "verbosity": -1,
    }


def train(
    dataset: Dataset,
    config: TrainConfig,
    on_round: Callable[[int, int], None] = lambda _done, _total: None,
    x: Matrix | None = None,
) -> Trained:
    """Train, evaluate on the later split and export; raises if the split lacks a class.
    ``x``: the dataset's feature matrix, if computed already (a study training many times)."""
    x = feature_matrix(dataset) if x is None else x
    y = dataset.frame["is_fraud"].to_numpy(bool)
    split = time_split(dataset.frame["event_time"], config)
    for name, part in (("training", split.train), ("validation", split.valid),
                       ("evaluation", split.evaluation)):  # fmt: skip
        if not y[part].any() or y[part].all():
            raise ValueError(f"the {name} split has a single class: more (or more varied) data")
    ratio = float((~y[split.train]).sum() / y[split.train].sum())
    params = _params(config, ratio)
    names = list(dataset.feature_names)
    train_set = lgb.Dataset(x[split.train], y[split.train], feature_name=names)
    valid_set = lgb.Dataset(x[split.valid], y[split.valid], reference=train_set)

    def progress(env: Any) -> None:
        on_round(env.iteration + 1, config.max_rounds)

    booster = lgb.train(
        params, train_set, num_boost_round=config.max_rounds, valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False), progress],
    )  # fmt: skip
    booster = _servable(booster)
    eval_x, eval_y = x[split.evaluation], y[split.evaluation]
    onnx = export.to_onnx(booster, eval_x)
    served = export.session(onnx)  # calibrated and evaluated on the scores served
    scores = export.fraud_probability(served, eval_x).astype(np.float64)
    valid_scores = export.fraud_probability(served, x[split.valid]).astype(np.float64)
    calibrated = calibration.fit(valid_scores, y[split.valid])
    metrics = evaluate(eval_y, scores)
    reliability = calibration.reliability(eval_y, scores, calibrated)
    metadata = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": dataset.kind,
        "feature_names": names,
        "signals": dataset.signals.model_dump(mode="json", exclude_defaults=True),
        "data": {
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "rows": len(y),
            "positives": int(y.sum()),
            "train_rows": int(split.train.size),
            "valid_rows": int(split.valid.size),
            "eval_rows": int(split.evaluation.size),
            "eval_from_event_time": int(dataset.frame["event_time"].iloc[split.evaluation].min()),
        },
        "parameters": {**params, "best_iteration": booster.num_trees()},
        "config": asdict(config),
        "metrics": {**metrics.as_dict(), "calibration": reliability},
        "thresholds": {"review": metrics.review.score, "decline": metrics.decline.score},
        "calibration": calibrated,
        "onnx": {"input": export.INPUT_NAME, "output": export.PROBABILITY_OUTPUT},
        # What drift is measured against: the features as the model learned them, the score
        # as it served rows it had not seen (training rows' scores are too sure of themselves).
        "drift": drift.reference(names, x[split.train], scores),
    }
    return Trained(booster, onnx, metrics, eval_y, scores, metadata)


def _servable(booster: lgb.Booster) -> lgb.Booster:
    """The booster cut at its best iteration, with split thresholds rounded down to float32.

    LightGBM keeps thresholds as doubles, ONNX's tree operator as float32: a float32 input
    between the two would branch differently. For a float32 input x, ``x <= t`` holds exactly
    when ``x <= t32`` with t32 the largest float32 not above t, so snapping changes nothing
    for LightGBM and makes ONNX take the same branches.
    """
    text = booster.model_to_string(num_iteration=booster.best_iteration or None)
    lines = [
        "threshold=" + " ".join(_floor_float32(v) for v in line[len("threshold=") :].split())
        if line.startswith("threshold=")
        else line
        for line in text.splitlines()
        if not line.startswith("tree_sizes=")  # byte offsets of the trees, which change here
    ]
    return lgb.Booster(model_str="\n".join(lines) + "\n")


def _floor_float32(text: str) -> str:
    value = float(text)
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return repr(float(rounded))


def pr_curve_png(
    labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64], title: str
) -> bytes:
    """The precision-recall curve on the evaluation split, with the two thresholds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision, recall = pr_curve(labels, scores)
    metrics = evaluate(labels, scores)
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    axes.plot(recall, precision, color="#1f77b4", lw=1.8, label=f"PR-AUC {metrics.pr_auc:.3f}")
    for name, threshold, marker in (("review", metrics.review, "o"),
                                    ("decline", metrics.decline, "s")):  # fmt: skip
        axes.plot(threshold.recall, threshold.precision, marker, ms=8,
                  label=f"{name} @ {threshold.score:.3f} (FPR {threshold.fpr:.2%})")  # fmt: skip
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def scores_for(frame_rows: Matrix, onnx: bytes) -> npt.NDArray[np.float64]:
    """ONNX Runtime scores, as the scoring service computes them."""
    return export.fraud_probability(export.session(onnx), frame_rows).astype(np.float64)
