"""Restarts keep protection: Redis durable in the state dir, one component restarted alone,
``stack up`` starting only what is down, and the feedback app ready soon after a restart."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from models.online import layout
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import free_loopback_port
from services.devstack.state import StackState
from tests.conftest import Run

pytestmark = pytest.mark.integration
READY_WITHIN_S = 30.0  # docs/operations.md's promise for a restarted feedback app


def _pids(state: StackState) -> dict[str, int]:
    return {p.name: p.pid for p in state.processes}


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
            return b"fraudstream_feedback_ready 1.0" in reply.read()
    except OSError:
        return False


@pytest.mark.timeout(400)
def test_redis_keeps_blocklists_and_histories_across_a_restart(tmp_path: Path) -> None:
    settings = Settings.of(state_dir=tmp_path / "state", feedback_metrics_port=0)
    state = stack.up(settings, feedback=False, workbench=False)
    try:
        with redis.Redis.from_url(state.redis_url) as client:
            client.set(layout.blocklist_card("c-blocked"), "fraud", px=3_600_000)
            client.zadd(layout.card_seen("c-busy"), {b"e1": 1, b"e2": 2})
        restarted = stack.restart(settings, "redis")
        assert _pids(restarted)["redis"] != _pids(state)["redis"]
        assert restarted.redis_url == state.redis_url
        with redis.Redis.from_url(state.redis_url) as client:
            assert client.get(layout.blocklist_card("c-blocked")) == b"fraud"
            assert client.pttl(layout.blocklist_card("c-blocked")) > 3_500_000  # TTL kept
            assert client.zcard(layout.card_seen("c-busy")) == 2
    finally:
        stack.down(settings)


@pytest.mark.timeout(400)
def test_stack_up_starts_only_what_is_down(tmp_path: Path) -> None:
    settings = Settings.of(state_dir=tmp_path / "state", feedback_metrics_port=0)
    state = stack.up(settings, feedback=False, workbench=False)
    try:
        scoring = next(p for p in state.processes if p.name == "scoring")
        os.kill(scoring.pid, signal.SIGKILL)  # a crash
        processes.wait_until(lambda: not processes.is_running(scoring), 10, "scoring killed")
        again = stack.up(settings, feedback=False, workbench=False)
        before, after = _pids(state), _pids(again)
        assert after["scoring"] != before["scoring"]
        assert {k: v for k, v in after.items() if k != "scoring"} == {
            k: v for k, v in before.items() if k != "scoring"
        }  # broker (and its topics) and Redis untouched
        assert again.scoring_url == state.scoring_url
        with urllib.request.urlopen(f"{again.scoring_url}/readyz", timeout=5) as ready:
            assert ready.status == 200
    finally:
        stack.down(settings)


@pytest.mark.timeout(400)
def test_a_restarted_feedback_app_is_ready_within_its_documented_time(tmp_path: Path) -> None:
    port = free_loopback_port()
    settings = Settings.of(state_dir=tmp_path / "state", feedback_metrics_port=port)
    state = stack.up(settings)
    try:
        processes.wait_until(lambda: _ready(port), 120, "feedback app ready", interval=0.5)
        app = next(p for p in state.processes if p.name == "feedback-app")
        os.kill(app.pid, signal.SIGKILL)  # the hard case: its group membership is left behind
        processes.wait_until(lambda: not processes.is_running(app), 10, "feedback app killed")
        started = time.monotonic()
        stack.up(settings)  # starts only the feedback app again
        processes.wait_until(lambda: _ready(port), 120, "feedback app ready again", 0.2)
        took = time.monotonic() - started
        print(f"\nfeedback app ready {took:.1f} s after a SIGKILL and `stack up`")
        assert took < READY_WITHIN_S
    finally:
        stack.down(settings)


def test_stack_restart_names_an_unknown_component(fraudstream: Run) -> None:
    done = fraudstream("stack", "restart", "database")
    assert done.returncode != 0
    assert "broker, redis, scoring, feedback-app" in done.stderr
