"""Each scored row's ``probability``: the calibration of the model version that scored it,
applied by the scoring core and the in-process scorer, picked up on a hot reload, the score
itself for a version without one; the wire and ``models show`` for both kinds of version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from models.features import offline
from models.features.definitions import FEATURE_NAMES
from models.training.calibration import calibrate
from models.training.datasets import frame_from_transactions
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.cli.models import models_app
from services.generator import GeneratorConfig, generate
from services.scoring.server.inprocess import InProcessScorer
from services.scoring.server.metrics import ScoringMetrics
from services.scoring.server.scorer import Scorer
from services.scoring.wire import RowResult, ScoreResponse

# Far from the identity, so a probability that skipped it would show.
SQUARE = {"method": "isotonic", "scores": [0.0, 0.25, 0.5, 0.75, 1.0],
          "probabilities": [0.0, 0.0625, 0.25, 0.5625, 1.0]}  # fmt: skip
FIGURES = {"ece": 0.0012, "brier": 0.0034, "ece_uncalibrated": 0.0056, "brier_uncalibrated": 0.0078}


@pytest.fixture(scope="module")
def rows() -> list[list[float]]:
    items = list(generate(GeneratorConfig(seed=8, customers=300, fraud_rate=0.05), 2_000))
    frame = offline.compute(frame_from_transactions([i.transaction for i in items]))
    values: list[list[float]] = frame[list(FEATURE_NAMES)].to_numpy(np.float64).tolist()
    return values


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A copy of the shipped registry: v0001, from before calibration, is current."""
    shutil.copytree(DEFAULT_REGISTRY, tmp_path / "registry")
    return Registry(tmp_path / "registry")


def _calibrated(registry: Registry, calibration: dict[str, Any]) -> str:
    """v0001's model as a new version whose metadata carries ``calibration``."""
    files = {p.name: p.read_bytes() for p in registry.path("v0001").iterdir()
             if p.name != "metadata.json"}  # fmt: skip
    meta = registry.metadata("v0001")
    meta = {**meta, "calibration": calibration, "metrics": {**meta["metrics"],
                                                            "calibration": FIGURES}}  # fmt: skip
    return registry.publish(files, meta)


def _body(rows: list[list[float]]) -> bytes:
    return msgspec.json.encode({"rows": [dict(zip(FEATURE_NAMES, r, strict=True)) for r in rows]})


def _columns(reply: ScoreResponse) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return (np.array([r.score for r in reply.results]),
            np.array([r.probability for r in reply.results]))  # fmt: skip


def test_probability_follows_the_serving_versions_calibration_across_reloads(
    registry: Registry, rows: list[list[float]]
) -> None:
    scorer = Scorer(registry.root, ScoringMetrics(CollectorRegistry()), shadow_version="v0001")
    assert scorer.reload_if_changed()
    body = _body(rows)
    before = scorer.score(body, "application/json")
    scores, probabilities = _columns(before)
    assert before.model_version == "v0001"
    assert np.array_equal(probabilities, scores)  # uncalibrated: the score itself
    assert scores.max() > 0.5  # rows across the range, fraud among them

    calibrated = _calibrated(registry, SQUARE)
    registry.promote(calibrated)
    assert scorer.reload_if_changed()
    after = scorer.score(body, "application/json")
    assert after.model_version == calibrated
    same_scores, probabilities = _columns(after)
    assert np.array_equal(same_scores, scores)  # the same model, now calibrated
    assert np.array_equal(probabilities, calibrate(scores, SQUARE))
    assert np.abs(probabilities - scores).max() > 0.1
    assert after.shadow is not None
    assert after.shadow.scores == scores.tolist()  # the shadow reports raw scores

    registry.rollback()
    assert scorer.reload_if_changed()
    assert np.array_equal(_columns(scorer.score(body, "application/json"))[1], scores)


def test_a_version_with_a_broken_calibration_is_refused_and_the_serving_one_stays(
    registry: Registry, rows: list[list[float]]
) -> None:
    scorer = Scorer(registry.root, ScoringMetrics(CollectorRegistry()))
    assert scorer.reload_if_changed()
    broken = _calibrated(registry, {**SQUARE, "probabilities": SQUARE["probabilities"][::-1]})
    registry.promote(broken, force=True)
    assert not scorer.reload_if_changed()
    assert scorer.model is not None
    assert scorer.model.version == "v0001"
    assert scorer.score(_body(rows[:5]), "application/json").model_version == "v0001"


def test_the_in_process_scorer_calibrates_too(registry: Registry, rows: list[list[float]]) -> None:
    reply = InProcessScorer(registry.path(_calibrated(registry, SQUARE))).score(rows)
    scores, probabilities = _columns(reply)
    assert np.array_equal(probabilities, calibrate(scores, SQUARE))


def test_a_reply_from_a_server_without_probability_still_decodes() -> None:
    old = msgspec.msgpack.encode({"model_version": "v1", "review_threshold": 0.5,
                                  "decline_threshold": 0.9,
                                  "results": [{"score": 0.25, "reasons": []}]})  # fmt: skip
    decoded = msgspec.msgpack.decode(old, type=ScoreResponse)
    assert decoded.results[0].probability == -1.0  # not sent
    new = ScoreResponse("v2", [RowResult(0.25, ["amount_usd"], 0.01)], 0.5, 0.9)
    assert msgspec.json.decode(msgspec.json.encode(new), type=ScoreResponse) == new


def test_models_show_states_the_calibration_or_its_absence(registry: Registry) -> None:
    calibrated = _calibrated(registry, SQUARE)
    runner = CliRunner()
    root = str(registry.root)
    plain = runner.invoke(models_app, ["show", "v0001", "--registry", root])
    assert plain.exit_code == 0, plain.output
    assert "uncalibrated" in plain.output
    shown = runner.invoke(models_app, ["show", calibrated, "--registry", root])
    assert shown.exit_code == 0, shown.output
    assert "uncalibrated" not in shown.output
    assert "isotonic" in shown.output
    assert all(str(value) in shown.output for value in FIGURES.values())
    as_json = runner.invoke(models_app, ["show", calibrated, "--registry", root, "--json"])
    meta = json.loads(as_json.output)
    assert meta["calibration"] == SQUARE
    assert meta["metrics"]["calibration"] == FIGURES
