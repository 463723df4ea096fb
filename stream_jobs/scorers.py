"""The two ways the decider gets scores: the scoring service (the job) and ONNX Runtime in
the same process (the pure-Python baseline of ``benchmarks/e2e.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models import features as f
from services.scoring.client import ScoringClient
from services.scoring.model import load
from services.scoring.scorer import RowResult, ScoreResponse


class ServiceScorer:
    """Rows as named features, over the pooled client (deadline, retries, breaker)."""

    def __init__(self, client: ScoringClient) -> None:
        self._client = client

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        named = [dict(zip(f.FEATURE_NAMES, row, strict=True)) for row in rows]
        return self._client.score(named)


class InProcessScorer:
    """One registry version loaded in this process; explains rows at or above review."""

    def __init__(self, version_dir: Path) -> None:
        self._model = load(version_dir)

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        model = self._model
        matrix = np.asarray(rows, dtype=np.float32)
        scores = model.score(matrix)
        reasons: list[list[str]] = [[] for _ in rows]
        flagged = np.flatnonzero(scores >= model.review_threshold)
        if flagged.size:
            for i, why in zip(flagged.tolist(), model.reasons(matrix[flagged]), strict=True):
                reasons[i] = why
        results = [RowResult(s, r) for s, r in zip(scores.tolist(), reasons, strict=True)]
        return ScoreResponse(
            model.version, results, model.review_threshold, model.decline_threshold
        )
