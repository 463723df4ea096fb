"""``stack up --monitoring`` against the real Prometheus (the OS package): it scrapes every
component under the rules' job names, every metric the rules read exists, the rules evaluate,
and ``promtool check metrics`` finds nothing on any component's scrape. Without the binaries
these tests fail, they never skip."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from services.clients.producer import TransactionProducer
from services.core.settings import Settings
from services.devstack import monitoring, processes, stack
from services.devstack.processes import free_loopback_port
from tests.integration.streaming import DecisionTail, produce

pytestmark = pytest.mark.integration
METRIC = re.compile(r"\b(fraudstream_[a-z0-9_]+|up)\b(?!:)")


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        loaded: dict[str, object] = json.loads(reply.read())
    return loaded


def _series(prometheus: str, name: str) -> list[object]:
    query = urllib.parse.urlencode({"match[]": name})
    data = _get(f"{prometheus}/api/v1/series?{query}")["data"]
    assert isinstance(data, list)
    return data


def rule_metric_names() -> set[str]:
    """Every raw metric the rules read (recording rules' own names excluded)."""
    groups = yaml.safe_load(monitoring.RULES.read_text())["groups"]
    return {m for g in groups for r in g["rules"] for m in METRIC.findall(r["expr"])}


def _two_free_ports() -> int:
    """A first port whose next one is free too (the job's two workers)."""
    while True:
        first = free_loopback_port()
        if not processes.port_open(first + 1):
            return first


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """A monitored stack that has decided some traffic, dead letters included."""
    state_dir = tmp_path_factory.mktemp("monitored") / "state"
    base = Settings.of(state_dir=state_dir, stack_monitoring=True, lake_flush_s=1.0,
                       job_metrics_port=_two_free_ports(),
                       feedback_metrics_port=free_loopback_port())  # fmt: skip
    state = stack.up(base)
    settings = stack.client_settings(base, state)
    job = stack.start_job(settings, state_dir / "logs")
    tail = DecisionTail(settings)
    try:
        assert state.prometheus_url is not None
        produce(settings, 2_000, 0, 41, "2026-03-01T00:00:00Z")
        with TransactionProducer(settings) as producer:
            for i in range(20):
                producer.send_raw(b"c1", b"not json %d" % i)
        tail.wait_for(2_000, 180, "decisions")
        prometheus = state.prometheus_url

        first = ("fraudstream_job_decisions_total", "fraudstream_feedback_lake_rows_total")

        def scraped() -> bool:
            return all(_series(prometheus, name) for name in first)

        processes.wait_until(scraped, 60, "the job and feedback app scraped", interval=1.0)
        yield settings, prometheus
    finally:
        tail.close()
        processes.stop(job)
        stack.down(base)


def test_every_component_is_scraped_under_the_rules_job_names(
    monitored: tuple[Settings, str],
) -> None:
    _, prometheus = monitored

    def health() -> set[tuple[str, str, str]]:
        targets = _get(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]  # type: ignore[index]
        return {(t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets}

    deadline = time.monotonic() + 30  # a target is scraped every 5 s: wait for one round
    while any(h != "up" for *_, h in health()) and time.monotonic() < deadline:
        time.sleep(1.0)
    assert set(monitoring.JOBS.values()) <= {job for job, *_ in health()}
    assert [t for t in health() if t[2] != "up"] == []


def test_every_metric_the_rules_read_exists_and_every_rule_evaluates(
    monitored: tuple[Settings, str],
) -> None:
    _, prometheus = monitored
    names = rule_metric_names()
    assert {"fraudstream_job_latency_seconds_bucket", "up"} <= names

    def missing() -> list[str]:
        return sorted(name for name in names if not _series(prometheus, name))

    deadline = time.monotonic() + 30  # the last counters may need a scrape or two more
    while missing() and time.monotonic() < deadline:
        time.sleep(1.0)
    assert missing() == []
    deadline = time.monotonic() + 30
    while True:  # every rule evaluated at least once, none in error
        groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]  # type: ignore[index]
        rules = [rule for group in groups for rule in group["rules"]]
        if all(r.get("lastEvaluation", "").startswith("20") for r in rules) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(1.0)
    assert len(rules) == 22
    assert [r["name"] for r in rules if r["health"] != "ok"] == []


def test_a_planted_typo_is_reported_missing(monitored: tuple[Settings, str]) -> None:
    """The negative control of the check above."""
    _, prometheus = monitored
    assert _series(prometheus, "fraudstream_job_decisions_total")
    assert not _series(prometheus, "fraudstream_job_decisions_totl")


def test_promtool_finds_nothing_on_any_components_scrape(monitored: tuple[Settings, str]) -> None:
    settings, _ = monitored
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus"
    state = stack.status(settings)
    assert state is not None
    assert state.scoring_url
    endpoints = [f"{state.scoring_url}/metrics",
                 f"http://127.0.0.1:{settings.feedback.metrics_port}/metrics",
                 f"http://127.0.0.1:{settings.job.metrics_port}/metrics"]  # fmt: skip
    for url in endpoints:
        with urllib.request.urlopen(url, timeout=5) as reply:
            exposition = reply.read()
        assert b"fraudstream_build_info{" in exposition, url
        assert b"process_cpu_seconds_total" in exposition, url
        assert b"_created" not in exposition, url
        checked = subprocess.run([tool, "check", "metrics"], input=exposition,
                                 capture_output=True, timeout=60, check=False)  # fmt: skip
        problems = (checked.stdout + checked.stderr).decode()
        assert checked.returncode == 0, (url, problems)
        assert not problems.strip(), (url, problems)
