"""How the job's decider gets scores: the scoring service, over the pooled client."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from services.scoring.client import ScoringClient, ScoringRejected
from services.scoring.wire import ScoreResponse

log = logging.getLogger(__name__)
NOT_UNDERSTOOD = frozenset({400, 415})  # a service from before the matrix request


class ServiceScorer:
    """Rows as one float32 matrix with its feature names, over the pooled client (deadline,
    retries, breaker). A service that does not understand the matrix (one not yet upgraded
    when the job is) gets named rows from then on, so a rollout in either order scores."""

    def __init__(self, client: ScoringClient, names: Sequence[str]) -> None:
        self._client, self._names = client, tuple(names)
        self._matrix = True

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        if self._matrix:
            try:
                return self._client.score_matrix(self._names, np.asarray(rows, np.float32))
            except ScoringRejected as error:
                if error.status not in NOT_UNDERSTOOD:
                    raise
                log.warning("the scoring service refused a matrix request (%s): sending "
                            "named rows from now on (upgrade it)", error)  # fmt: skip
                self._matrix = False
        return self._client.score([dict(zip(self._names, row, strict=True)) for row in rows])
