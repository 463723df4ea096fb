"""One loaded model version: the ONNX session that scores, the native model that explains,
and the calibration that turns the score into a fraud probability (numpy only)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.training.calibration import calibrate, checked
from services.core.errors import MissingExtra

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LoadedModel:
    version: str
    feature_names: tuple[str, ...]
    review_threshold: float
    decline_threshold: float
    load_seconds: float
    _session: Any
    _explainer: Any
    _calibration: Mapping[str, Any] | None  # None: a version from before calibration
    drift_reference: Mapping[str, Any] | None = None  # None: trained before versions kept one

    def score(self, rows: Matrix) -> npt.NDArray[np.float64]:
        """The model's raw score per row, from ONNX Runtime (what thresholds are set on)."""
        _, probabilities = self._session.run(None, {"features": rows})
        return np.asarray(probabilities[:, 1], dtype=np.float64)

    def probability(self, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Calibrated P(fraud) for a batch of this model's scores (the scores themselves
        for an uncalibrated version)."""
        return calibrate(scores, self._calibration)

    def reasons(self, rows: Matrix, k: int = 3) -> list[list[str]]:
        """The top features that raised each row's score (path attribution)."""
        result: list[list[str]] = self._explainer.top(rows, k)
        return result


def load(version_dir: Path, threads: int = 1) -> LoadedModel:
    """Load a registry version directory; raises MissingExtra without the serve extra."""
    try:
        import lightgbm as lgb
        import onnxruntime as ort
    except ImportError as error:
        raise MissingExtra("serve", error.name) from None
    started = time.perf_counter()
    meta = json.loads((version_dir / "metadata.json").read_text())
    calibration = checked(meta.get("calibration"))  # a broken one refuses the version
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no per-call shape warnings in the logs
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    from models.training.explain import PathExplainer

    names: Sequence[str] = meta["feature_names"]
    booster = lgb.Booster(model_file=str(version_dir / "model.txt"))
    stored = version_dir / "explainer.npz"
    explainer = (
        PathExplainer.from_bytes(booster, names, stored.read_bytes(), threads)
        if stored.is_file()
        else PathExplainer.build(booster, names, threads)  # versions from before it was stored
    )
    warm = np.zeros((1, len(names)), dtype=np.float32)
    session.run(None, {"features": warm})  # the first run allocates; do it before traffic
    return LoadedModel(
        version=meta["version"],
        feature_names=tuple(names),
        review_threshold=float(meta["thresholds"]["review"]),
        decline_threshold=float(meta["thresholds"]["decline"]),
        load_seconds=time.perf_counter() - started,
        _session=session,
        _explainer=explainer,
        _calibration=calibration,
        drift_reference=meta.get("drift"),
    )
