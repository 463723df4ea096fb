"""How the job's decider gets scores: the scoring service, over the pooled client."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.scoring.client import ScoringClient
from services.scoring.wire import ScoreResponse


class ServiceScorer:
    """Rows as one float32 matrix with its feature names, over the pooled client (deadline,
    retries, breaker)."""

    def __init__(self, client: ScoringClient, names: Sequence[str]) -> None:
        self._client, self._names = client, tuple(names)

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        return self._client.score_matrix(self._names, np.asarray(rows, dtype=np.float32))
