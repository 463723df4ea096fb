"""How the job's decider gets scores: the scoring service, over the pooled client."""

from __future__ import annotations

from collections.abc import Sequence

from services.scoring.client import ScoringClient
from services.scoring.wire import ScoreResponse


class ServiceScorer:
    """Rows as named features, over the pooled client (deadline, retries, breaker)."""

    def __init__(self, client: ScoringClient, names: Sequence[str]) -> None:
        self._client, self._names = client, tuple(names)

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        named = [dict(zip(self._names, row, strict=True)) for row in rows]
        return self._client.score(named)
