"""`fraudstream models drift` as a data scientist runs it: a version trained on generated
data, then a later day of the same data (no drift in amounts) and the same day with every
amount quadrupled (a planted shift that pages), with the history before it in place."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models.training.registry import DEFAULT_REGISTRY
from stream_jobs import drift_report
from tests.conftest import Run

pytestmark = pytest.mark.integration


def _ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def test_psi_is_low_on_the_same_law_and_pages_on_a_planted_shift(
    fraudstream: Run, tmp_path: Path
) -> None:
    data = tmp_path / "events.jsonl"
    produce = ("produce", "--seed", "3", "--count", "60000", "--customers", "1500",
               "--fraud-rate", "0.02", "--rate", "0", "--out", str(data), "--json")  # fmt: skip
    _ok(fraudstream(*produce))
    registry = tmp_path / "registry"
    trained = _ok(fraudstream("train", "--data", str(data), "--registry", str(registry), "--json"))
    version = str(trained["version"])

    lines = data.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    last_day = _day(max(e["event_time"] for e in events))
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text("".join(
        json.dumps(e | {"amount": round(e["amount"] * 4, 2)}) + "\n"
        if _day(e["event_time"]) == last_day else line + "\n"
        for e, line in zip(events, lines, strict=True)
    ))  # fmt: skip
    (tmp_path / "shifted.labels.csv").write_bytes((tmp_path / "events.labels.csv").read_bytes())

    def drift(path: Path) -> dict[str, dict[str, Any]]:
        result = _ok(fraudstream("models", "drift", version, "--from", last_day, "--to",
                                 "2099-01-01", "--data", str(path), "--registry",
                                 str(registry), "--html", str(path.with_suffix(".html")),
                                 "--json"))  # fmt: skip
        assert result["range"] == {"from": last_day, "to": "2099-01-01"}
        return {r["name"]: r for r in [result["score"], *result["features"]]}

    same, moved = drift(data), drift(shifted)
    assert same["amount_usd"]["level"] == "ok"
    assert moved["amount_usd"]["level"] == "page"
    assert float(moved["amount_usd"]["psi"]) > 10 * float(same["amount_usd"]["psi"])
    # Eleven shares rounded to 6 places: their sum may miss 1 by up to 5.5e-6.
    assert sum(moved["amount_usd"]["observed"]) == pytest.approx(1.0, abs=1e-5)
    page = shifted.with_suffix(".html").read_text()
    drawn = page.count("data:image/png;base64,")
    top = max((r for name, r in moved.items() if name != "score"), key=lambda r: r["psi"])
    assert f"<h3>{top['name']}: PSI" in page  # the most drifted feature is drawn
    assert "<h3>score: PSI" in page
    assert drawn == 1 + drift_report.DRAWN

    older = tmp_path / "older"  # the shipped registry as it was before versions kept one
    shutil.copytree(DEFAULT_REGISTRY, older)
    meta = older / "versions" / "v0001" / "metadata.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items()
                                if k != "drift"}))  # fmt: skip
    old = fraudstream("models", "drift", "v0001", "--from", last_day, "--to", "2099-01-01",
                      "--data", str(data), "--registry", str(older))  # fmt: skip
    assert old.returncode == 1
    assert "no drift reference" in old.stderr
