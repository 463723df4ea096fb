"""Two embedded stacks on one machine (a test beside a developer's stack): each stack's
Prometheus scrapes its own job's workers only. ``stack up --monitoring`` records a free port
range for the job; a job run on that stack binds it, and the stack's Prometheus scrapes it."""

from __future__ import annotations

import json
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

from services.core.settings import Settings, load_settings
from services.devstack import monitoring, processes, stack
from services.devstack.state import StackState, write

WORKERS = 2


def _job_targets(settings: Settings) -> set[str]:
    return set(monitoring.targets(settings, None, None, feedback=False)["job"])


def _listening(ports: range) -> ExitStack:
    """Hold ``ports`` as a running job's workers would."""
    held = ExitStack()
    for port in ports:
        sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.bind(("127.0.0.1", port))
        sock.listen()
    return held


def _record(state_dir: Path, job_metrics_port: int | None) -> StackState:
    state = StackState(bootstrap_servers="127.0.0.1:1", redis_url="redis://127.0.0.1:2/0",
                       broker_port=1, redis_port=2, topics={}, processes=[], java_home=None,
                       started_at=0, prometheus_url="http://127.0.0.1:3",
                       job_metrics_port=job_metrics_port)  # fmt: skip
    state_dir.mkdir(parents=True, exist_ok=True)
    stack.ensure_token_key(state_dir)
    write(state_dir, state)
    return state


@pytest.fixture
def no_job_port_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDSTREAM_JOB_METRICS_PORT", raising=False)
    monkeypatch.delenv("FRAUDSTREAM_JOB_PARALLELISM", raising=False)


@pytest.mark.usefixtures("no_job_port_variable")
def test_two_monitored_stacks_never_scrape_the_same_job_port(tmp_path: Path) -> None:
    first = monitoring.free_port_range(WORKERS)
    with _listening(range(first, first + WORKERS)):  # the first stack's job runs
        second = monitoring.free_port_range(WORKERS)
    a = load_settings(state_dir=tmp_path / "a", job_parallelism=WORKERS)
    b = load_settings(state_dir=tmp_path / "b", job_parallelism=WORKERS)
    _record(tmp_path / "a", first)
    _record(tmp_path / "b", second)
    on_a = load_settings(state_dir=tmp_path / "a", job_parallelism=WORKERS)
    on_b = load_settings(state_dir=tmp_path / "b", job_parallelism=WORKERS)
    assert _job_targets(on_a) == {f"127.0.0.1:{first}", f"127.0.0.1:{first + 1}"}
    assert _job_targets(on_a).isdisjoint(_job_targets(on_b))
    # The negative control: configured from the settings' fixed ports, as before, they share.
    assert _job_targets(a) == _job_targets(b) == {"127.0.0.1:9300", "127.0.0.1:9301"}


@pytest.mark.usefixtures("no_job_port_variable")
def test_a_job_run_on_a_monitored_stack_binds_the_ports_its_prometheus_scrapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _record(tmp_path, 41_000)
    recorded = json.loads((tmp_path / "stack.json").read_text())
    assert recorded["job_metrics_port"] == 41_000
    # `fraudstream job run` reads its settings; the demo and tests take client_settings.
    assert load_settings(state_dir=tmp_path).job.metrics_port == 41_000
    assert stack.client_settings(Settings.of(state_dir=tmp_path), state).job.metrics_port == 41_000
    monkeypatch.setenv("FRAUDSTREAM_JOB_METRICS_PORT", "42000")  # told otherwise: as told
    assert load_settings(state_dir=tmp_path).job.metrics_port == 42_000
    monkeypatch.delenv("FRAUDSTREAM_JOB_METRICS_PORT")
    _record(tmp_path, None)  # a stack without monitoring: the settings' port, as ever
    assert load_settings(state_dir=tmp_path).job.metrics_port == 9300


def test_a_range_with_a_taken_port_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = processes.free_loopback_port()
    # The first range offered holds the taken port; the next ones may be taken by others on a
    # busy machine, so more are offered.
    offered = iter([taken - 1, *range(taken + 1, taken + 200)])
    monkeypatch.setattr(monitoring, "_candidate", lambda count: next(offered))
    with _listening(range(taken, taken + 1)):
        first = monitoring.free_port_range(WORKERS)
    assert first > taken


def test_the_range_is_below_the_ports_the_kernel_hands_out_for_port_0() -> None:
    """Else a server binding port 0 (Beam's, a client's) may take a worker's port first."""
    ephemeral = monitoring.ephemeral_start()
    assert 10_000 < ephemeral <= 65_535
    for _ in range(200):
        first = monitoring.free_port_range(16)
        assert first >= 10_000
        assert first + 16 <= ephemeral
