"""The README's main command: ``fraudstream demo`` on the embedded stack, feedback app included."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from services.devstack import processes
from tests.conftest import Run

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)  # the demo's own 400 s, the lake's 120 s and stack down
def test_demo_decides_everything_labels_its_alerts_and_fills_the_lake(
    fraudstream: Run, tmp_path: Path
) -> None:
    try:
        demo = fraudstream("demo", "--rate", "500", "--duration", "15", "--seed", "3", "--json",
                           timeout=400)  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        summary = json.loads(demo.stdout)

        def filled() -> bool:  # the archive thread, and the labels agent once faust has joined
            status = json.loads(fraudstream("lake", "status", "--json").stdout)
            return bool(status["decisions"]["rows"] >= summary["produced"]
                        and status["labels"]["rows"] > 0)  # fmt: skip

        processes.wait_until(filled, 120, "the decisions archived and labels written", 1.0)

        def worked() -> bool:  # the stack's workbench: a case per alert, closed by its label
            with sqlite3.connect(tmp_path / "state" / "workbench.db") as db:
                made, closed, by_demo = db.execute(
                    "SELECT count(*), count(closed_by), count(*) FILTER (WHERE closed_by = "
                    "'demo') FROM cases").fetchone()  # fmt: skip
            # The watcher may stop before the job's very last alert: at least its count.
            return bool(made >= summary["alerts"] and closed == by_demo > 0)

        processes.wait_until(worked, 60, "every alert a case, the labelled closed", 1.0)
        labelled = fraudstream("lake", "query", "SELECT count(*) AS n FROM labels", "--json")
    finally:
        down = fraudstream("stack", "down", "--json")
    assert down.returncode == 0, down.stderr
    assert "feedback-app" in json.loads(down.stdout)["stopped"]
    assert summary["produced"] == 7_500
    assert summary["missing"] == 0
    assert summary["dlq"] == summary["invalid_sent"]
    assert summary["alerts"] > 0
    assert summary["workbench"].startswith("http://127.0.0.1:")  # the stack's, left running
    assert summary["dispositions"] == summary["alerts"]  # the demo labelled every alert
    assert labelled.returncode == 0, labelled.stderr
    assert 0 < json.loads(labelled.stdout)["n"] <= summary["dispositions"]
