"""The scoring service's reply, shared by the server, its client and the stream job.

The request is rows of named features (``models.features.definitions.FEATURE_NAMES``, then a
signals file's), decoded by the server against the loaded model's own feature list; the reply
is these structs, JSON or msgpack.
"""

from __future__ import annotations

import msgspec


class RowResult(msgspec.Struct, frozen=True):
    """``score``: the model's raw score, what the thresholds are set on; ``probability``: the
    calibrated P(fraud), for expected cost (the score itself for an uncalibrated model). Its
    default, -1, means a server from before it did not send one: decoding stays compatible."""

    score: float
    reasons: list[str]
    probability: float = -1.0


class ShadowResult(msgspec.Struct, frozen=True):
    model_version: str
    scores: list[float]


class ScoreResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    model_version: str
    results: list[RowResult]
    review_threshold: float
    decline_threshold: float
    shadow: ShadowResult | None = None
