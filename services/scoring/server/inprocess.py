"""The scorer the decider can use without the service: a registry version loaded in this
process (the pure-Python baseline of ``benchmarks/e2e.py`` and the decider's unit tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.scoring.server.model import load
from services.scoring.wire import RowResult, ScoreResponse


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
        probabilities = model.probability(scores)
        results = [
            RowResult(s, r, p)
            for s, r, p in zip(scores.tolist(), reasons, probabilities.tolist(), strict=True)
        ]
        return ScoreResponse(
            model.version, results, model.review_threshold, model.decline_threshold
        )
