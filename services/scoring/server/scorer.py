"""The scoring core: validate a batch, score it with the current model (and the shadow),
explain the flagged rows, and swap models when the registry's CURRENT changes.

It knows nothing of HTTP. A request takes the current model once, at its start, so a swap in
the middle of it cannot mix versions; the old model stays alive until its last request ends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from services.scoring.server import model as models
from services.scoring.server.metrics import ScoringMetrics
from services.scoring.server.model import LoadedModel
from services.scoring.wire import RowResult, ScoreResponse, ShadowResult

Explain = Literal["flagged", "all", "none"]
_ROW_IN_PATH = re.compile(r"\$\.rows\[(\d+)\]")
_FIELD_IN_MESSAGE = re.compile(r"field `([^`]+)`|\$\.rows\[\d+\]\.([A-Za-z0-9_]+)")


class Rejected(Exception):
    """The request is invalid (422) or unusable (400); the message names row and field."""

    def __init__(self, status: int, message: str, row: int | None = None,
                 field: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.row, self.field = status, row, field


class NotReady(Exception):
    """No model is loaded yet."""


@dataclass(frozen=True)
class _Codec:
    """Request decoders for one model's features: each row an object with exactly them."""

    json: msgspec.json.Decoder[Any]
    msgpack: msgspec.msgpack.Decoder[Any]

    @classmethod
    def for_features(cls, names: tuple[str, ...]) -> _Codec:
        row = msgspec.defstruct("Row", [(n, float) for n in names], forbid_unknown_fields=True)
        request = msgspec.defstruct(
            "ScoreRequest",
            [("rows", list[row]), ("explain", Explain, "flagged")],  # type: ignore[valid-type]
        )
        return cls(msgspec.json.Decoder(request), msgspec.msgpack.Decoder(request))


class Scorer:
    """Scores batches with the registry's current model; optionally a fixed shadow version."""

    def __init__(self, registry: Path, metrics: ScoringMetrics, threads: int = 1,
                 shadow_version: str | None = None) -> None:  # fmt: skip
        self._registry, self._metrics, self._threads = registry, metrics, threads
        self._current: tuple[LoadedModel, _Codec] | None = None
        self._shadow = self._load(shadow_version, "shadow") if shadow_version else None

    @property
    def model(self) -> LoadedModel | None:
        return self._current[0] if self._current else None

    def _load(self, version: str, role: str) -> LoadedModel:
        path = self._registry / "versions" / version
        if not (path / "metadata.json").is_file():
            raise FileNotFoundError(f"no model version {version} in the registry")
        loaded = models.load(path, self._threads)
        self._metrics.model_load_seconds.labels(loaded.version).set(loaded.load_seconds)
        self._metrics.model_info.labels(loaded.version, role).set(1)
        return loaded

    def registry_current(self) -> str | None:
        try:
            return (self._registry / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def reload_if_changed(self) -> bool:
        """Load the registry's current version if it is not the one serving; swap it in.
        Blocking (call it off the event loop); returns whether a swap happened."""
        wanted = self.registry_current()
        serving = self.model
        if wanted is None or (serving is not None and serving.version == wanted):
            return False
        loaded = self._load(wanted, "primary")
        self._current = (loaded, _Codec.for_features(loaded.feature_names))  # atomic swap
        if serving is not None:
            self._metrics.model_info.labels(serving.version, "primary").set(0)
            self._metrics.reloads.inc()
        return True

    def score(self, body: bytes, content_type: str) -> ScoreResponse:
        current = self._current
        if current is None:
            raise NotReady("no model loaded")
        model, codec = current
        request = self._decode(codec, body, content_type)
        rows = request.rows
        if not rows:
            raise Rejected(422, "no rows to score", field="rows")
        matrix = np.array([msgspec.structs.astuple(r) for r in rows], dtype=np.float32)
        self._check_finite(matrix, model)
        scores = model.score(matrix)
        reasons = self._reasons(model, matrix, scores, request.explain)
        self._metrics.batch_rows.observe(len(rows))
        self._metrics.scores.observe_many(model.version, "primary", scores)
        shadow = None
        if self._shadow is not None:
            shadow_scores = self._shadow.score(matrix)
            self._metrics.scores.observe_many(self._shadow.version, "shadow", shadow_scores)
            shadow = ShadowResult(self._shadow.version, shadow_scores.tolist())
        results = [RowResult(s, r) for s, r in zip(scores.tolist(), reasons, strict=True)]
        return ScoreResponse(model.version, results, model.review_threshold,
                             model.decline_threshold, shadow)  # fmt: skip

    @staticmethod
    def _decode(codec: _Codec, body: bytes, content_type: str) -> Any:
        decoder = codec.msgpack if content_type.startswith("application/msgpack") else codec.json
        try:
            return decoder.decode(body)
        except msgspec.ValidationError as error:
            message = str(error)
            row = _ROW_IN_PATH.search(message)
            found = _FIELD_IN_MESSAGE.search(message)
            field = (found.group(1) or found.group(2)) if found else None
            raise Rejected(422, message, int(row.group(1)) if row else None, field) from None
        except msgspec.DecodeError as error:
            raise Rejected(400, f"malformed body: {error}") from None

    @staticmethod
    def _check_finite(matrix: np.ndarray[Any, Any], model: LoadedModel) -> None:
        bad = ~np.isfinite(matrix)
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            name = model.feature_names[column]
            value = float(matrix[row, column])
            shown = "inf" if math.isinf(value) else "NaN"
            raise Rejected(422, f"non-finite value {shown} - at `$.rows[{row}].{name}`", row, name)

    @staticmethod
    def _reasons(model: LoadedModel, matrix: np.ndarray[Any, Any], scores: np.ndarray[Any, Any],
                 explain: Explain) -> list[list[str]]:  # fmt: skip
        reasons: list[list[str]] = [[] for _ in range(len(scores))]
        if explain == "none":
            return reasons
        chosen = np.arange(len(scores)) if explain == "all" else np.flatnonzero(
            scores >= model.review_threshold)  # fmt: skip
        if chosen.size:
            for i, why in zip(chosen.tolist(), model.reasons(matrix[chosen]), strict=True):
                reasons[i] = why
        return reasons
