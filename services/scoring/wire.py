"""The scoring service's wire formats, shared by the server, its client and the stream job.

A request is either rows of named features (JSON or msgpack: ``{"rows": [{name: value}]}``,
decoded by the server against the loaded model's own feature list), or, for the stream job,
one float32 matrix with the feature names once (:class:`MatrixRequest`, ``MATRIX_TYPE``):
named rows repeat every name in every row, about 60 % of their bytes and most of their
decoding. The reply is these structs, JSON or msgpack (msgpack for a matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

MATRIX_TYPE = "application/vnd.fraudstream.matrix+msgpack"
MAX_FEATURES = 1024  # columns a matrix may name (a signals file's features included)
_Name = Annotated[str, msgspec.Meta(max_length=128)]


class MatrixRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``features``: the columns' names, the model's feature list in its order; ``matrix``:
    the rows, row after row, each value a little-endian float32 (NaN: a declared signal the
    event lacks)."""

    features: Annotated[list[_Name], msgspec.Meta(max_length=MAX_FEATURES)]
    matrix: bytes


def matrix_body(names: Sequence[str], rows: npt.NDArray[Any]) -> bytes:
    """A matrix request's body: ``rows`` (rows x ``names``) as little-endian float32."""
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ValueError(f"a matrix of shape {rows.shape} for {len(names)} feature names")
    matrix = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    return msgspec.msgpack.encode(MatrixRequest(list(names), matrix))


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
