"""The scoring service's reply, shared by the server, its client and the stream job.

The request is rows of named features (``models.features.definitions.FEATURE_NAMES``, then a
signals file's), decoded by the server against the loaded model's own feature list; the reply
is these structs, JSON or msgpack.
"""

from __future__ import annotations

import msgspec


class RowResult(msgspec.Struct, frozen=True):
    score: float
    reasons: list[str]


class ShadowResult(msgspec.Struct, frozen=True):
    model_version: str
    scores: list[float]


class ScoreResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    model_version: str
    results: list[RowResult]
    review_threshold: float
    decline_threshold: float
    shadow: ShadowResult | None = None
