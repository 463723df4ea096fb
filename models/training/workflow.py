"""What the ``train`` and ``models`` commands do, wired from datasets, training and registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import PromotionRefused, RegistryError
from models.training import datasets
from models.training.explain import PathExplainer
from models.training.metrics import Metrics, evaluate
from models.training.registry import DEFAULT_TOLERANCE, Registry
from models.training.trainer import (
    TrainConfig,
    feature_matrix,
    pr_curve_png,
    scores_for,
    time_split,
    train,
)
from services.core.signals import EMPTY, Signals


@dataclass(frozen=True)
class Published:
    version: str
    promoted: bool
    metadata: dict[str, Any]
    refused: str | None = None  # why the gate kept it from being current
    gate: tuple[float | None, float | None] = (None, None)  # PR-AUC of it and the current
    note: str | None = None  # why the first version of a registry was not made current


def train_and_publish(
    data: Path,
    registry: Registry,
    config: TrainConfig,
    promote: bool = False,
    on_round: Callable[[int, int], None] = lambda _d, _t: None,
    tolerance: float = DEFAULT_TOLERANCE,
    mapping: Path | None = None,
    signals: Signals = EMPTY,
) -> Published:
    """Train on ``data`` (read through ``mapping`` if given), write a new version; make it
    current if the registry has none yet, or if asked and it is no worse than the current
    model on the same ``data``."""
    dataset = datasets.load(data, mapping, signals)
    trained = train(dataset, config, on_round)
    png = pr_curve_png(trained.eval_labels, trained.eval_scores, f"{dataset.source}: evaluation")
    files = {
        "model.onnx": trained.onnx,
        "model.txt": trained.booster.model_to_string().encode(),
        "explainer.npz": PathExplainer.build(trained.booster, dataset.feature_names).to_bytes(),
        "pr_curve.png": png,
    }
    version = registry.publish(files, trained.metadata)
    if registry.current() is None:
        try:
            registry.promote(version)
        except PromotionRefused as refused:  # its inputs are not what the job sends (yet)
            note = (f"{refused}: set FRAUDSTREAM_MODEL_SIGNALS to its signals file to serve it"
                    if trained.metadata["signals"] else str(refused))  # fmt: skip
            return Published(version, False, registry.metadata(version), note=note)
        return Published(version, True, registry.metadata(version))
    if not promote:
        return Published(version, False, registry.metadata(version))
    gate = gate_figures(registry, version, data, mapping)
    try:
        registry.promote(version, tolerance, False, *gate)
    except PromotionRefused as refused:
        return Published(version, False, registry.metadata(version), str(refused), gate)
    return Published(version, True, registry.metadata(version), gate=gate)


def evaluate_version(
    registry: Registry,
    version: str,
    data: Path,
    all_rows: bool = False,
    history: Path | None = None,
    mapping: Path | None = None,
) -> Metrics:
    """A version's figures on any labelled file: its later time split, or every row.

    With ``history``, features are computed over the history and then ``data`` (the stream's
    view of a later period: every card's and merchant's past in place), and every row of
    ``data``, and only those, is scored.
    """
    labels, scores, _ = scored_rows(registry, version, data, all_rows, history, mapping)
    return evaluate(labels, scores)


def scored_rows(
    registry: Registry,
    version: str,
    data: Path,
    all_rows: bool = False,
    history: Path | None = None,
    mapping: Path | None = None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.object_]]:
    """Labels, scores and transaction ids of the rows ``evaluate_version`` scores."""
    meta = registry.metadata(version)
    signals = Signals.model_validate(meta.get("signals", {}))  # those it was trained with
    dataset = datasets.load(data, mapping, signals)
    if history is not None:
        dataset = datasets.after_history(datasets.load(history, mapping, signals), dataset)
    if list(dataset.feature_names) != meta["feature_names"]:
        missing = [n for n in meta["feature_names"] if n not in dataset.feature_names]
        raise RegistryError(
            f"{version} expects {meta['kind']} features that {dataset.source} does not give"
            f"{': ' + ', '.join(missing[:5]) if missing else ' in this order'} (the signals "
            "file it was trained with is in its metadata)"
        )
    x = feature_matrix(dataset)
    y = dataset.frame["is_fraud"].to_numpy(bool)
    rows = np.arange(len(y))
    if history is not None:
        rows = np.flatnonzero(~dataset.frame["history"].to_numpy(bool))
    elif not all_rows:
        config = TrainConfig(**meta.get("config", {}))  # the version's own split
        rows = time_split(dataset.frame["event_time"], config).evaluation
    onnx = (registry.path(version) / "model.onnx").read_bytes()
    ids = dataset.frame["transaction_id"].to_numpy()[rows]
    return y[rows], scores_for(x[rows], onnx), ids


def gate_figures(
    registry: Registry, version: str, data: Path | None, mapping: Path | None = None
) -> tuple[float | None, float | None]:
    """PR-AUC of ``version`` and of the current model on ``data`` (None: nothing to compare)."""
    live = registry.current()
    if data is None or live is None or live == version:
        return None, None
    return (evaluate_version(registry, version, data, mapping=mapping).pr_auc,
            evaluate_version(registry, live, data, mapping=mapping).pr_auc)  # fmt: skip


def promote_through_gate(
    registry: Registry, version: str, tolerance: float, force: bool, data: Path | None
) -> tuple[float | None, float | None]:
    """Promote; with ``data``, candidate and current are compared on that same data."""
    candidate, current = gate_figures(registry, version, data)
    registry.promote(version, tolerance, force, candidate, current)
    return candidate, current
