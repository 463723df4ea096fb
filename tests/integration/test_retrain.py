"""`fraudstream retrain` on a real lake (Parquet, DuckDB) and registry: a run killed at any step
resumes and publishes exactly one version, with its model card; in shadow, a candidate that
loses on the decisions' outcomes stays the shadow, and one that is no worse is promoted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.lake import tables as lk
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.clients.produce import generated_items
from services.core.contract import Decision, LabelRecord
from services.core.settings import RetrainSettings
from services.devstack import processes
from services.generator import GeneratorConfig
from stream_jobs import retrain
from stream_jobs.strategy import Thresholds

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000
START_MS = 1_772_323_200_000  # 2026-03-01
LENIENT = RetrainSettings(window_days=3650, shadow_days=7, tolerance=1.0, min_fraud=20,
                          every_days=0)  # fmt: skip


def _lake(path: Path, count: int = 24_000) -> int:
    """Generated transactions with every fraud labelled and a tenth of the rest; returns the
    last event time."""
    lake = lk.Lake(path)
    items = list(generated_items(GeneratorConfig(seed=11, customers=1_500, fraud_rate=0.02,
                                                 start_ms=START_MS), count))  # fmt: skip
    lake.append("transactions", [lk.Sourced("transactions", 0, i,
                                            lk.transaction_row(item.transaction))
                                 for i, item in enumerate(items)])  # fmt: skip
    labels: list[lk.Sourced] = []
    for i, item in enumerate(items):
        tx = item.transaction
        if item.is_fraud or i % 10 == 0:
            record = LabelRecord(transaction_id=tx.transaction_id,
                                 label="fraud" if item.is_fraud else "legit", analyst="ana",
                                 labelled_at=tx.event_time_ms + DAY_MS,
                                 event_time=tx.event_time_ms,
                                 card_id=tx.card_id, customer_id=tx.customer_id,
                                 merchant_id=tx.merchant_id)  # fmt: skip
            labels.append(lk.Sourced("labels", 0, len(labels), lk.label_row(record)))
    lake.append("labels", labels)
    return max(item.transaction.event_time_ms for item in items)


def _registry(path: Path) -> Registry:
    shutil.copytree(DEFAULT_REGISTRY, path, ignore=shutil.ignore_patterns("__pycache__"))
    return Registry(path)


def _retrain(registry: Path, lake: Path, *more: str) -> subprocess.Popen[str]:
    env = {**os.environ, "FRAUDSTREAM_RETRAIN_WINDOW_DAYS": "3650",
           "FRAUDSTREAM_RETRAIN_TOLERANCE": "1.0"}  # fmt: skip
    argv = [sys.executable, "-m", "services.cli", "retrain", "--registry", str(registry),
            "--lake", str(lake), "--maturity-days", "0", "--strategy", "0", *more]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def test_a_run_killed_after_publishing_resumes_and_publishes_exactly_one_version(
    tmp_path: Path,
) -> None:
    _lake(tmp_path / "lake")
    registry = _registry(tmp_path / "registry")
    before = registry.versions()

    first = _retrain(registry.root, tmp_path / "lake")
    try:  # killed the moment its version appears: before the run could record it
        processes.wait_until(lambda: len(registry.versions()) > len(before) or
                             first.poll() is not None, 240, "a version published",
                             interval=0.01)  # fmt: skip
        first.kill()  # SIGKILL; a no-op on a child that has exited
    finally:
        first.wait(10)
    state = retrain.status(registry)
    assert state["run"] is not None  # the run was cut short
    assert state["run"]["step"] in ("train", "evaluate")
    # Wherever the kill fell, put the run back to before it recorded its version: the window
    # in which a careless resume would train and publish a second one.
    state["run"]["step"], state["run"]["candidate"] = "train", None
    (registry.root / retrain.STATE).write_text(json.dumps(state))

    second = _retrain(registry.root, tmp_path / "lake", "--json")
    out, err = second.communicate(timeout=240)
    assert second.returncode == 0, err
    run = json.loads(out)

    published = [v for v in registry.versions() if v not in before]
    assert published == [run["candidate"]]  # one version, the one the run carried on with
    assert run["step"] == "judge"  # waiting out the shadow period
    assert registry.shadow() == run["candidate"]
    assert registry.current() == "v0001"
    card = (registry.path(run["candidate"]) / "model_card.html").read_text()
    assert f"Model card: {run['candidate']}" in card
    assert card.count("data:image/png;base64,") == 3  # PR curve, calibration, importance
    assert "against v0001&#x27;s reference bins" in card  # drift against the previous version
    kept = [
        e["message"] for e in run["log"] if "was published before the run stopped" in e["message"]
    ]
    assert kept == [f"{run['candidate']} was published before the run stopped: kept"]


def _step(pipeline: retrain.Pipeline) -> retrain.Run:
    run = pipeline.run()
    assert run is not None
    return run


def _to_judge(tmp_path: Path) -> tuple[Registry, retrain.Pipeline, list[int], retrain.Run]:
    """A lake, a registry, and a run taken to its judge step on a clock the test moves."""
    last = _lake(tmp_path / "lake", 12_000)
    registry = _registry(tmp_path / "registry")
    clock = [last + DAY_MS]
    pipeline = retrain.Pipeline(registry, tmp_path / "lake", LENIENT, 0.0, Thresholds(),
                                now=lambda: clock[0])  # fmt: skip
    run = _step(pipeline)
    assert run.step == "judge"
    return registry, pipeline, clock, run


def _judged(tmp_path: Path, shadow_quality: float) -> tuple[Registry, retrain.Run]:
    """A run taken to its shadow step, then eight days of decisions where the shadow's score
    separates fraud ``shadow_quality`` as well as the champion's (1: as well), then judged."""
    registry, pipeline, clock, run = _to_judge(tmp_path)
    shadow_since = clock[0]
    rng = np.random.default_rng(5)
    rows: list[lk.Sourced] = []
    labels: list[lk.Sourced] = []
    for i in range(3_000):
        at = shadow_since + int(i * 8 * DAY_MS / 3_000)
        fraud = rng.random() < 0.03
        champion = float(np.clip((0.7 if fraud else 0.3) + rng.normal(0, 0.2), 0, 1))
        mixed = (0.7 if fraud else 0.3) * shadow_quality + 0.5 * (1 - shadow_quality)
        shadow = float(np.clip(mixed + rng.normal(0, 0.2), 0, 1))
        decision = Decision(transaction_id=f"s{i}", card_id=f"c{i}", event_time=at,
                            decided_at=at, score=champion, decision="approve", reasons=[],
                            model_version="v0001", shadow_model_version=str(run.candidate),
                            shadow_score=shadow, features={"amount_usd": 50.0})  # fmt: skip
        rows.append(lk.Sourced("decisions", 0, i, lk.decision_row(decision)))
        if fraud:
            record = LabelRecord(transaction_id=f"s{i}", label="fraud", analyst="ana",
                                 labelled_at=at + 1, event_time=at, card_id=f"c{i}",
                                 customer_id="x", merchant_id="m")  # fmt: skip
            labels.append(lk.Sourced("labels", 1, len(labels), lk.label_row(record)))
    lake = lk.Lake(tmp_path / "lake")
    lake.append("decisions", rows)
    lake.append("labels", labels)
    clock[0] = shadow_since + 3 * DAY_MS
    assert _step(pipeline).step == "judge"  # three days in: still waiting
    clock[0] = shadow_since + 8 * DAY_MS
    return registry, _step(pipeline)


def test_a_candidate_that_loses_on_outcomes_stays_the_shadow(tmp_path: Path) -> None:
    registry, run = _judged(tmp_path, shadow_quality=0.0)  # the shadow's scores are noise
    assert run.step == "lost"
    assert registry.current() == "v0001"
    assert registry.shadow() == run.candidate
    assert run.judgement["pr_auc"]["difference"]["value"] < 0
    assert retrain.status(registry)["run"] is None  # finished: the next run starts afresh


def test_a_candidate_no_worse_on_outcomes_is_promoted(tmp_path: Path) -> None:
    registry, run = _judged(tmp_path, shadow_quality=1.5)  # separates better than the champion
    assert run.step == "promoted"
    assert registry.current() == run.candidate
    assert registry.shadow() is None
    assert run.judgement["pr_auc"]["difference"]["ci95"][0] > 0
    assert run.judgement["sources"] == {
        "a": {"recorded": 3_000, "shadow": 0, "rescored": 0, "unscorable": 0},
        "b": {"recorded": 0, "shadow": 3_000, "rescored": 0, "unscorable": 0},
    }


def test_a_failing_run_ends_failed_and_the_next_starts_afresh(tmp_path: Path) -> None:
    """A lake without a fraud label fails the training step: the run ends ``failed`` with
    the reason, instead of blocking every later run on the same window."""
    last = _lake(tmp_path / "lake", 2_000)
    registry = _registry(tmp_path / "registry")
    clock = [last + DAY_MS]
    window = RetrainSettings(window_days=0.001, every_days=7)  # a window with no transaction
    pipeline = retrain.Pipeline(registry, tmp_path / "lake", window, 0.0, Thresholds(),
                                now=lambda: clock[0])  # fmt: skip
    for attempt in range(1, retrain.ATTEMPTS + 1):  # retried at each run, then given up
        with pytest.raises(retrain.RetrainError, match="no fraud label"):
            pipeline.run()
        state = retrain.status(registry)
        assert (state["run"] is None) == (attempt == retrain.ATTEMPTS)
    assert [r["step"] for r in state["finished"]] == ["failed"]
    assert [e["message"][:9] for e in state["finished"][0]["log"][1:]] == ["attempt 1",
                                                                         "attempt 2",
                                                                         "attempt 3"]  # fmt: skip
    clock[0] += DAY_MS
    with pytest.raises(retrain.RetrainError):  # tried again at once: a new run, a new window
        pipeline.run()
    for _ in range(retrain.ATTEMPTS - 1):
        with pytest.raises(retrain.RetrainError):
            pipeline.run()
    runs = retrain.status(registry)["finished"]
    assert len({r["id"] for r in runs}) == 2
    assert runs[0]["window"] != runs[1]["window"]
    assert registry.versions() == ["v0001"]


def test_a_promotion_by_hand_meanwhile_ends_the_run_and_one_recorded_late_counts(
    tmp_path: Path,
) -> None:
    registry, pipeline, clock, run = _to_judge(tmp_path)
    assert run.candidate is not None
    registry.promote(run.candidate, force=True)  # as if the run died after promoting it
    assert _step(pipeline).step == "promoted"
    assert registry.shadow() is None
    again = retrain.Pipeline(registry, tmp_path / "lake", LENIENT, 0.0, Thresholds(),
                             now=lambda: clock[0])  # fmt: skip
    second = _step(again)  # a new run: its candidate shadows v0002
    assert (second.step, second.champion) == ("judge", run.candidate)
    registry.promote("v0001", force=True)  # an operator goes back meanwhile
    clock[0] += 8 * DAY_MS
    ended = _step(again)
    assert ended.step == "superseded"
    assert registry.current() == "v0001"
    assert registry.shadow() is None
