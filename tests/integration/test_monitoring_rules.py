"""The Prometheus rules against the real promtool: valid, each alert tested firing and silent,
each pointing at a runbook that exists. The OS package ``prometheus`` provides promtool
(``.ci/run`` installs it); without it these tests fail, they never skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
MONITORING = Path(__file__).resolve().parents[2] / "helm" / "fraudstream" / "monitoring"
RUNBOOKS = "https://github.com/fraudstream/fraudstream/blob/main/helm/fraudstream/monitoring/"


def _promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (see the README's set-up)"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_rules_are_valid_and_every_alert_passes_its_tests() -> None:
    checked = _promtool("check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = yaml.safe_load((MONITORING / "rules_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    names = {str(rule["alert"]) for rule in _alerts()}
    assert fired == silent == names


def test_every_alert_has_severity_summary_description_and_a_runbook_in_the_repository() -> None:
    for rule in _alerts():
        labels, notes = rule["labels"], rule["annotations"]
        assert labels["severity"] in {"page", "ticket"}, rule["alert"]  # type: ignore[index]
        assert notes["summary"], rule["alert"]  # type: ignore[index]
        assert notes["description"], rule["alert"]  # type: ignore[index]
        url = str(notes["runbook_url"])  # type: ignore[index]
        assert url.startswith(RUNBOOKS), url
        runbook = MONITORING / url.removeprefix(RUNBOOKS)
        assert runbook.is_file(), url
        assert re.search(r"\*\*What to do\.\*\*", runbook.read_text()), runbook.name


def test_a_planted_typo_fails_the_rule_tests(tmp_path: Path) -> None:
    """The negative control: the tests notice a rule that reads a metric that is not there."""
    rules = (MONITORING / "rules.yml").read_text()
    assert "fraudstream_job_dlq_total[10m]" in rules
    planted = rules.replace("fraudstream_job_dlq_total[10m]", "fraudstream_job_dlqq_total[10m]")
    (tmp_path / "rules.yml").write_text(planted)
    shutil.copy(MONITORING / "rules_test.yml", tmp_path / "rules_test.yml")
    tested = _promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "FraudstreamDeadLetterSpike" in tested.stdout + tested.stderr
