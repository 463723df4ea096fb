"""pint, the Prometheus rules linter, offline on the chart's rules with
``helm/fraudstream/monitoring/.pint.hcl``: every aggregation keeps ``namespace`` (one release
per namespace, or several, on one Prometheus), every alert has its severity, summary,
description and runbook. pint is built by ``.ci/tools`` (from ``.ci/pint``); without it these
tests fail, they never skip."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import tool

pytestmark = pytest.mark.integration
MONITORING = Path(__file__).resolve().parents[2] / "helm" / "fraudstream" / "monitoring"


def _lint(directory: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, object]]]:
    """pint on ``directory``'s rules.yml and .pint.hcl: the run and its problems, every
    severity (info up), failing on any warning."""
    report = directory / "pint.json"
    run = subprocess.run(
        [
            tool("pint"),
            "--no-color",
            "--offline",
            "--config",
            ".pint.hcl",
            "lint",
            "--min-severity=info",
            "--fail-on=warning",
            f"--json={report}",
            "rules.yml",
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    problems: list[dict[str, object]] = json.loads(report.read_text() or "[]")
    return run, problems


def _copy(tmp_path: Path, rules: str) -> Path:
    (tmp_path / "rules.yml").write_text(rules)
    shutil.copy(MONITORING / ".pint.hcl", tmp_path / ".pint.hcl")
    return tmp_path


def test_pint_finds_nothing_in_the_rules(tmp_path: Path) -> None:
    run, problems = _lint(_copy(tmp_path, (MONITORING / "rules.yml").read_text()))
    assert run.returncode == 0, run.stdout + run.stderr
    assert problems == [], problems
    groups = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    every = sum(len(group["rules"]) for group in groups)
    assert every > 30
    assert f"entries={every}" in run.stderr  # it read every rule
    assert "Problems found" not in run.stderr


def test_pint_reports_an_aggregation_that_drops_the_namespace(tmp_path: Path) -> None:
    """The negative control: one alert's ``sum`` loses ``namespace`` and pint names it."""
    rules = (MONITORING / "rules.yml").read_text()
    kept = "sum by (namespace) (increase(fraudstream_job_strategy_refused_total[10m]))"
    assert rules.count(kept) == 1
    planted = rules.replace(kept, "sum(increase(fraudstream_job_strategy_refused_total[10m]))")
    run, problems = _lint(_copy(tmp_path, planted))
    assert run.returncode != 0
    assert "promql/aggregate" in run.stdout + run.stderr
    line = 1 + planted[: planted.index("sum(increase(")].count("\n")
    found = [(p["reporter"], p["severity"], p["lines"]) for p in problems]
    assert found == [("promql/aggregate", "Bug", [line])], problems  # that line, nothing else
