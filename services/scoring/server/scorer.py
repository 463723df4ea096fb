"""The scoring core: validate a batch, score it with the current model (and the shadow),
calibrate the model's scores into probabilities, explain the flagged rows, and swap models
(each with its calibration) when the registry's CURRENT changes.

It knows nothing of HTTP. A request takes the current model once, at its start, so a swap in
the middle of it cannot mix versions; the old model stays alive until its last request ends.
A model goes live only if its inputs are the serving feature list (what the job sends): one
that differs is refused, counted (``reload_failures{reason}``) and logged once, and the model
serving keeps serving. The shadow is scored with its own columns, picked by name.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import zip_longest
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from models.features.definitions import FEATURE_NAMES
from models.training.registry import VERSION_PATTERN, inputs_problem
from services.core.errors import UserError
from services.scoring.server import model as models
from services.scoring.server.metrics import ScoringMetrics
from services.scoring.server.model import LoadedModel
from services.scoring.wire import (
    MATRIX_TYPE,
    MatrixRequest,
    RowResult,
    ScoreResponse,
    ShadowResult,
)

log = logging.getLogger("fraudstream.scoring")
LOAD_RETRY_S = 30.0  # a version that could not be loaded (a registry read failing) is retried
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


class IncompatibleModel(UserError):
    """A model's inputs are not the serving feature list."""


_BUILT_IN = frozenset(FEATURE_NAMES)


_matrix_request = msgspec.msgpack.Decoder(MatrixRequest).decode


@cache
def _built_in(names: tuple[str, ...]) -> np.ndarray[Any, Any]:
    """Which of a model's inputs are built-in features (never missing): once per model."""
    return np.array([n in _BUILT_IN for n in names])


@dataclass(frozen=True)
class _Codec:
    """Request decoders for one model's features: each row an object with exactly them."""

    json: msgspec.json.Decoder[Any]
    msgpack: msgspec.msgpack.Decoder[Any]

    @classmethod
    def for_features(cls, names: tuple[str, ...]) -> _Codec:
        """A declared signal may be missing (null, or NaN in msgpack); a built-in never."""
        fields = [(n, float if n in _BUILT_IN else float | None) for n in names]
        row = msgspec.defstruct("Row", fields, forbid_unknown_fields=True)
        request = msgspec.defstruct(
            "ScoreRequest",
            [("rows", list[row])],  # type: ignore[valid-type]
        )
        return cls(msgspec.json.Decoder(request), msgspec.msgpack.Decoder(request))


class Scorer:
    """Scores batches with the registry's current model; optionally a fixed shadow version.
    ``serving``: the features every request carries, in order (what the job sends);
    ``explain``: which rows get reason codes, the server's choice (a client choosing "all"
    would have a free score-and-reasons oracle)."""

    def __init__(self, registry: Path, metrics: ScoringMetrics, threads: int = 1,
                 shadow_version: str | None = None, serving: Sequence[str] = FEATURE_NAMES,
                 explain: Explain = "flagged") -> None:  # fmt: skip
        self._registry, self._metrics, self._threads = registry, metrics, threads
        self._serving, self._explain = tuple(serving), explain
        self._current: tuple[LoadedModel, _Codec] | None = None
        self._refused: tuple[str, float] = ("", 0.0)  # the version refused, until when
        self._shadow: tuple[LoadedModel, list[int]] | None = None
        self._follows_shadow = not shadow_version  # else fixed: the registry's SHADOW ignored
        self._shadow_tried = ""  # the SHADOW pointer last acted on
        if shadow_version:
            self._shadow = self._shadow_of(self._load(shadow_version, "shadow"))

    def _shadow_of(self, shadow: LoadedModel) -> tuple[LoadedModel, list[int]]:
        """The shadow with the request columns it reads, by name."""
        missing = [n for n in shadow.feature_names if n not in self._serving]
        if missing:
            raise IncompatibleModel(f"shadow {shadow.version} needs features requests do "
                                    f"not carry: {', '.join(missing[:5])}")  # fmt: skip
        return shadow, [self._serving.index(n) for n in shadow.feature_names]

    def follow_shadow(self) -> None:
        """Score beside the registry's SHADOW version (none: no shadow), unless the service
        was started with a fixed one. A shadow that cannot be read or loaded is logged,
        counted and left out until SHADOW changes; nothing here ever raises: the primary's
        reloads and scores never wait for the shadow."""
        if not self._follows_shadow:
            return
        try:
            wanted = (self._registry / "SHADOW").read_text().strip()
        except FileNotFoundError:
            wanted = ""
        except (OSError, UnicodeError) as error:
            wanted = f"unreadable ({type(error).__name__})"
        if wanted == self._shadow_tried:
            return
        self._shadow_tried = wanted
        previous = self._shadow
        try:
            if wanted and not VERSION_PATTERN.fullmatch(wanted):
                raise ValueError(f"SHADOW names no version: {wanted[:40]!r}")
            loaded = (
                models.load(self._registry / "versions" / wanted, self._threads) if wanted else None
            )
            self._shadow = self._shadow_of(loaded) if loaded else None
        except Exception:
            self._shadow = None  # before it is counted: a reader of the count sees it gone
            log.exception("shadow %r refused; scoring without a shadow", wanted[:40])
            self._metrics.reload_failures.labels("shadow_refused").inc()
        if previous is not None:
            self._metrics.model_info.labels(previous[0].version, "shadow").set(0)
        if self._shadow is not None:
            shadow = self._shadow[0]
            self._metrics.model_load_seconds.labels(shadow.version).set(shadow.load_seconds)
            self._metrics.model_info.labels(shadow.version, "shadow").set(1)

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
        """Load the registry's current version if it is not the one serving and was not
        refused already; swap it in if its inputs are the serving list. Blocking (call it off
        the event loop); returns whether a swap happened. Then the shadow, whatever
        happened to the primary."""
        try:
            return self._reload_primary()
        finally:
            self.follow_shadow()

    def _reload_primary(self) -> bool:
        wanted = self.registry_current()
        serving = self.model
        if wanted is None or (serving is not None and serving.version == wanted):
            self._metrics.current_refused.set(0)
            return False
        if wanted == self._refused[0] and time.monotonic() < self._refused[1]:
            return False  # refused already: tried again once CURRENT changes (or, for one
        try:  # that could not be loaded, after LOAD_RETRY_S)
            loaded = models.load(self._registry / "versions" / wanted, self._threads)
        except Exception:
            self._refuse(wanted, "load_error", "cannot be loaded", LOAD_RETRY_S, exc_info=True)
            return False
        if problem := inputs_problem(loaded.feature_names, self._serving):
            self._refuse(wanted, "incompatible_inputs", problem, math.inf)
            return False
        try:
            self._metrics.drift.prepare(loaded.version, loaded.drift_reference,
                                        loaded.feature_names)  # fmt: skip
        except Exception:
            self._refuse(wanted, "load_error", "its drift reference cannot be read",
                         LOAD_RETRY_S, exc_info=True)  # fmt: skip
            return False
        self._metrics.model_load_seconds.labels(loaded.version).set(loaded.load_seconds)
        self._metrics.model_info.labels(loaded.version, "primary").set(1)
        self._current = (loaded, _Codec.for_features(loaded.feature_names))  # atomic swap
        self._refused = ("", 0.0)
        self._metrics.current_refused.set(0)
        if serving is not None:
            self._metrics.model_info.labels(serving.version, "primary").set(0)
            self._metrics.reloads.inc()
        return True

    def _refuse(self, version: str, reason: str, why: str, retry_s: float,
                exc_info: bool = False) -> None:  # fmt: skip
        """Count and log a version that cannot go live; the serving model stays, and the
        refusal shows (``current_refused``) until CURRENT names one that can."""
        self._refused = (version, time.monotonic() + retry_s)
        self._metrics.reload_failures.labels(reason).inc()
        self._metrics.current_refused.set(1)
        serving = self.model.version if self.model else "none"
        log.error("model %s refused (%s): %s; still serving %s", version, reason, why, serving,
                  exc_info=exc_info)  # fmt: skip

    def score(self, body: bytes, content_type: str) -> ScoreResponse:
        current = self._current
        if current is None:
            raise NotReady("no model loaded")
        model, codec = current
        if content_type.startswith(MATRIX_TYPE):
            matrix = self._matrix(model, body)
        else:
            rows = self._decode(codec, body, content_type).rows
            if not rows:
                raise Rejected(422, "no rows to score", field="rows")
            matrix = np.array([msgspec.structs.astuple(r) for r in rows], dtype=np.float32)
        self._check_finite(matrix, model)
        scores = model.score(matrix)
        reasons = self._reasons(model, matrix, scores, self._explain)
        self._metrics.batch_rows.observe(len(matrix))
        self._metrics.scores.observe_many(model.version, "primary", scores)
        self._metrics.drift.observe(model.version, model.drift_reference, model.feature_names,
                                    matrix, scores)  # fmt: skip
        shadow, following = None, self._shadow  # read once: a reload may swap it meanwhile
        if following is not None:  # its own columns, by name
            shadow_model, columns = following
            shadow_scores = shadow_model.score(np.ascontiguousarray(matrix[:, columns]))
            self._metrics.scores.observe_many(shadow_model.version, "shadow", shadow_scores)
            shadow = ShadowResult(shadow_model.version, shadow_scores.tolist())
        probabilities = model.probability(scores)  # the shadow's stay raw scores
        results = [
            RowResult(s, r, p)
            for s, r, p in zip(scores.tolist(), reasons, probabilities.tolist(), strict=True)
        ]
        return ScoreResponse(model.version, results, model.review_threshold,
                             model.decline_threshold, shadow)  # fmt: skip

    @staticmethod
    def _matrix(model: LoadedModel, body: bytes) -> np.ndarray[Any, Any]:
        """A matrix request's rows: its columns must be the model's features, in order."""
        try:
            request = _matrix_request(body)
        except msgspec.ValidationError as error:
            raise Rejected(422, str(error)) from None
        except msgspec.DecodeError as error:
            raise Rejected(400, f"malformed body: {error}") from None
        names = model.feature_names
        if tuple(request.features) != names:
            pairs = enumerate(zip_longest(request.features, names))
            wrong = next(i for i, (sent, expected) in pairs if sent != expected)
            wanted = names[wrong] if wrong < len(names) else "none (too many columns)"
            raise Rejected(422, f"the matrix's columns are not the model's features: column "
                           f"{wrong} should be {wanted}", field="features")  # fmt: skip
        rows, rest = divmod(len(request.matrix), 4 * len(names))
        if rest:
            raise Rejected(422, f"the matrix's {len(request.matrix)} bytes are not whole rows "
                           f"of {len(names)} float32", field="matrix")  # fmt: skip
        if not rows:
            raise Rejected(422, "no rows to score", field="matrix")
        return np.frombuffer(request.matrix, dtype="<f4").reshape(rows, len(names))

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
        """Infinity nowhere; NaN (missing) only in a declared signal's features."""
        bad = np.isinf(matrix) | (np.isnan(matrix) & _built_in(model.feature_names))
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
