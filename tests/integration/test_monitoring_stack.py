"""``stack up --monitoring`` against the real Prometheus (the OS package): it scrapes every
component under the rules' job names (the job's Flink metrics through the real Pushgateway),
every metric the rules read exists, the rules evaluate,
every dashboard query is answered, and ``promtool check metrics`` finds nothing on any
component's scrape. Without the binaries
these tests fail, they never skip."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import msgspec
import pytest
import yaml

from models.training import drift
from services.clients.produce import generated_items
from services.clients.producer import TransactionProducer
from services.core.exposition import component_registry, serve_metrics
from services.core.settings import Settings
from services.devstack import dashboards, monitoring, processes, stack
from services.devstack.processes import free_loopback_port
from services.generator import GeneratorConfig
from tests.integration.streaming import DecisionTail, produce

pytestmark = pytest.mark.integration
METRIC = re.compile(r"\b((?:fraudstream|flink)_[A-Za-z0-9_]+|up)\b(?!:)")


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


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """A monitored stack that has decided some traffic, dead letters included."""
    state_dir = tmp_path_factory.mktemp("monitored") / "state"
    base = Settings.of(state_dir=state_dir, stack_monitoring=True, lake_flush_s=1.0,
                       job_from_beginning=True,
                       feedback_metrics_port=free_loopback_port())  # fmt: skip
    state = stack.up(base)
    settings = stack.client_settings(base, state)
    job = stack.start_job(settings, state_dir / "logs")
    tail = DecisionTail(settings)
    try:
        assert settings.job.metrics_port == state.job_metrics_port  # what its Prometheus scrapes
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
    assert {"fraudstream_job_latency_seconds_bucket", "flink_jobmanager_job_numRestarts",
            "up"} <= names  # fmt: skip

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
    groups_in_file = yaml.safe_load(monitoring.RULES.read_text())["groups"]
    assert len(rules) == sum(len(g["rules"]) for g in groups_in_file) > 30
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


VARIABLES = ("$namespace", "$job", "$instance")
SELECTOR = re.compile(r"\b((?:fraudstream|flink)[A-Za-z0-9_:]*)(\{[^}]*\})?")


def _substituted(query: str) -> str:
    """What Grafana sends for "All" and a 1-minute rate interval."""
    for variable in VARIABLES:
        query = query.replace(variable, ".*")
    assert "$" not in query.replace("$__rate_interval", ""), query  # a variable left over
    return query.replace("$__rate_interval", "1m")


def unscoped(query: str) -> list[str]:
    """The series a query reads without filtering on the dashboard's variables: every one on
    ``$namespace``, the project's own raw metrics on ``$job`` and ``$instance`` as well."""
    wrong = []
    for name, selector in SELECTOR.findall(query):
        wanted = ['namespace=~"$namespace"']
        if name.startswith("fraudstream_"):  # not a recording (name:level:ops), not Flink's
            wanted += ['job=~"$job"', 'instance=~"$instance"']
        if not all(w in selector for w in wanted):
            wrong.append(name + selector)
    return wrong


def _query(prometheus: str, expr: str) -> tuple[str, list[object]]:
    reply = _get(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    data = reply["data"]
    assert isinstance(data, dict)
    return str(reply["status"]), list(data["result"])


def test_the_dashboard_files_are_what_the_code_builds_and_fully_described() -> None:
    for uid in dashboards.DASHBOARDS:
        path = dashboards.OUT / f"{uid}.json"
        assert path.read_text() == dashboards.rendered(uid), f"{path.name}: run the generator"
        board = json.loads(path.read_text())
        names = {v["name"] for v in board["templating"]["list"]}
        assert {"datasource", "namespace", "job", "instance"} <= names
        for panel in board["panels"]:
            assert panel["title"], uid
            assert panel["description"], panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_every_dashboard_query_filters_on_the_namespace_and_the_other_variables() -> None:
    queries = [p.query for _, panels in dashboards.DASHBOARDS.values() for p in panels]
    assert len(queries) >= 25
    assert [q for q in queries if unscoped(q)] == []
    recorded = [q for q in queries if "fraudstream:" in q]
    assert len(recorded) == 4  # the recording-rule panels are among those checked
    # The negative control: the queries as they were, unfiltered or partly filtered.
    assert unscoped("fraudstream:decisions_degraded:ratio_rate10m") == [
        "fraudstream:decisions_degraded:ratio_rate10m"
    ]
    assert unscoped('sum(rate(fraudstream_job_decisions_total{namespace=~"$namespace"}[5m]))')
    assert unscoped('max(flink_jobmanager_job_numRestarts{instance=~"$instance"})')


def test_every_dashboard_query_is_answered_with_a_series(monitored: tuple[Settings, str]) -> None:
    _, prometheus = monitored
    queries = {(uid, p.title): _substituted(p.query)
               for uid, (_, panels) in dashboards.DASHBOARDS.items() for p in panels}  # fmt: skip
    assert len(queries) >= 25

    def unanswered() -> list[tuple[str, str]]:
        return [key for key, expr in queries.items() if not _query(prometheus, expr)[1]]

    deadline = time.monotonic() + 45  # rates need two scrapes of 5 s within their minute
    while unanswered() and time.monotonic() < deadline:
        time.sleep(2.0)
    assert unanswered() == []
    typo = _substituted(dashboards.DASHBOARDS["fraudstream-overview"][1][1].query)
    status, series = _query(prometheus, typo.replace("decisions_total", "decisions_totl"))
    assert (status, series) == ("success", [])  # the negative control: a typo answers nothing


def _psi(prometheus: str, feature: str) -> float | None:
    expr = f'max(fraudstream:drift_psi:1h{{feature="{feature}"}})'
    _, series = _query(prometheus, expr)
    return float(series[0]["value"][1]) if series else None  # type: ignore[index]


def test_a_planted_amount_shift_pages_in_the_recorded_psi(monitored: tuple[Settings, str]) -> None:
    """The live drift path: the scoring service's bin counters, Prometheus' recording rules.
    The generator's own amounts stay under the warning; the same events with every amount
    quadrupled, half again as many, push the hour's PSI over the page threshold."""
    settings, prometheus = monitored
    processes.wait_until(lambda: _psi(prometheus, "amount_usd") is not None, 60,
                         "the amount's PSI recorded", interval=1.0)  # fmt: skip
    before = _psi(prometheus, "amount_usd")
    assert before is not None
    assert before < drift.WARN  # the same law as the training data: no drift
    shifted = generated_items(GeneratorConfig(seed=43, start_ms=1_772_366_400_000), 3_000)
    with TransactionProducer(settings) as producer:
        for item in shifted:
            tx = item.transaction
            producer.send(msgspec.structs.replace(tx, amount=round(tx.amount * 4, 2)))
    processes.wait_until(lambda: (_psi(prometheus, "amount_usd") or 0) >= drift.PAGE, 120,
                         "the amount's PSI over the page threshold", interval=2.0)  # fmt: skip
    groups = yaml.safe_load(monitoring.RULES.read_text())["groups"]
    severe = next(r["expr"] for g in groups for r in g["rules"]
                  if r.get("alert") == "FraudstreamModelDriftSevere")  # fmt: skip
    paged = [series["metric"]["feature"] for series in _query(prometheus, severe)[1]]  # type: ignore[index]
    assert "amount_usd" in paged  # its condition holds; it fires once held for its 30 minutes


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_metrics_endpoints_answer_liveness_and_readiness() -> None:
    """What the chart's probes ask: alive at once, ready only once the component says so."""
    ready = threading.Event()
    port = serve_metrics(component_registry(), "127.0.0.1", free_loopback_port(),
                         lambda: None if ready.is_set() else "waiting for a test")  # fmt: skip
    assert port is not None
    base = f"http://127.0.0.1:{port}"
    assert (_status(f"{base}/healthz"), _status(f"{base}/readyz")) == (200, 503)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/readyz", timeout=5)
    assert refused.value.read() == b"not ready: waiting for a test\n"  # the reason, at 3 a.m.
    ready.set()
    assert _status(f"{base}/readyz") == 200
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as reply:
        assert b"fraudstream_build_info{" in reply.read()


def test_the_running_feedback_app_and_job_are_alive_and_ready(
    monitored: tuple[Settings, str],
) -> None:
    settings, _ = monitored
    for port in (settings.feedback.metrics_port, settings.job.metrics_port):
        assert _status(f"http://127.0.0.1:{port}/healthz") == 200
        assert _status(f"http://127.0.0.1:{port}/readyz") == 200
