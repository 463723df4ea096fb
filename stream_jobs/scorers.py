"""How the job's decider gets scores: the scoring service, over the pooled client."""

from __future__ import annotations

from collections.abc import Sequence

from models import features as f
from services.scoring.client import ScoringClient
from services.scoring.wire import ScoreResponse


class ServiceScorer:
    """Rows as named features, over the pooled client (deadline, retries, breaker)."""

    def __init__(self, client: ScoringClient) -> None:
        self._client = client

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        named = [dict(zip(f.FEATURE_NAMES, row, strict=True)) for row in rows]
        return self._client.score(named)
