"""A standalone Flink cluster from the apache-flink wheel's own scripts: one JobManager and
N TaskManagers on loopback, so ``fraudstream job submit`` can be tried (and tested) on one
machine exactly as against a real cluster.

Each process is ``jobmanager.sh`` / ``taskmanager.sh start-foreground``, which exec the JVM,
so the recorded PID is the JVM itself and stopping it by PID stops that process only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import yaml

from services.devstack import processes
from services.devstack.java import find_java_home
from services.devstack.processes import ProcessRecord

START_TIMEOUT_S = 120.0
STATE_FILE = "flink-cluster.json"  # in the state directory, beside the stack's
_ENDED = {"CANCELED", "FAILED", "FINISHED"}


class Cluster(msgspec.Struct, frozen=True):
    rest_port: int
    processes: list[ProcessRecord]

    @property
    def jobmanager(self) -> str:
        """The REST endpoint ``job submit --jobmanager`` takes."""
        return f"127.0.0.1:{self.rest_port}"


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


def _config(rpc_port: int, rest_port: int, slots: int) -> dict[str, Any]:
    """The wheel's JVM options (needed on Java 17+) with every address on loopback."""
    shipped = yaml.safe_load((flink_home() / "conf" / "config.yaml").read_text())
    return {
        "env.java.opts.all": shipped["env"]["java"]["opts"]["all"],
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": slots,
        "taskmanager.memory.process.size": "1728m",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": rest_port,
    }


def _write_conf(directory: Path, config: dict[str, Any]) -> Path:
    conf = directory / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(flink_home() / "conf" / "log4j-console.properties", conf)
    (conf / "config.yaml").write_text(yaml.safe_dump(config))
    return conf


def _lib_dir(directory: Path) -> Path:
    """The wheel's lib/ plus opt/flink-python: a cluster runs Python UDFs only with it there
    (PyFlink's local mode adds it by itself)."""
    lib = directory / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    home = flink_home()
    for jar in [*(home / "lib").glob("*.jar"), *(home / "opt").glob("flink-python-*.jar")]:
        link = lib / jar.name
        if not link.exists():
            link.symlink_to(jar)
    return lib


def rest(cluster: Cluster, path: str, method: str = "GET") -> Any:
    """One call to the JobManager's REST API; the decoded JSON reply."""
    url = f"http://127.0.0.1:{cluster.rest_port}{path}"
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=5) as reply:
        body = reply.read()
    return json.loads(body) if body else None


def start(directory: Path, taskmanagers: int = 2, slots: int = 1) -> Cluster:
    """Start the cluster; return once every TaskManager has registered."""
    rpc_port, rest_port = processes.free_loopback_port(), processes.free_loopback_port()
    conf = _write_conf(directory, _config(rpc_port, rest_port, slots))
    env = dict(os.environ) | {
        "FLINK_CONF_DIR": str(conf),
        "FLINK_LIB_DIR": str(_lib_dir(directory)),
        "FLINK_LOG_DIR": str(directory / "log"),
        "FLINK_PID_DIR": str(directory),
        "JAVA_HOME": str(find_java_home()),
    }

    def spawn(name: str, script: str) -> ProcessRecord:
        argv = ["bash", str(flink_home() / "bin" / script), "start-foreground"]
        return processes.spawn(name, argv, directory / f"{name}.out", env)

    started = [spawn("jobmanager", "jobmanager.sh")]
    started += [spawn(f"taskmanager-{i}", "taskmanager.sh") for i in range(taskmanagers)]
    cluster = Cluster(rest_port, started)
    try:
        processes.wait_until(
            lambda: rest(cluster, "/overview")["taskmanagers"] == taskmanagers,
            START_TIMEOUT_S, f"Flink cluster with {taskmanagers} TaskManagers", interval=0.5,
        )  # fmt: skip
    except processes.WaitTimeout:
        stop(cluster)
        raise
    return cluster


def cancel_jobs(cluster: Cluster, timeout: float = 30.0) -> None:
    """Cancel every running job and wait until none runs (its Python workers end with it)."""

    def running() -> list[str]:
        return [j["id"] for j in rest(cluster, "/jobs")["jobs"] if j["status"] not in _ENDED]

    for job_id in running():
        rest(cluster, f"/jobs/{job_id}?mode=cancel", "PATCH")
    processes.wait_until(lambda: not running(), timeout, "Flink jobs cancelled", interval=0.2)


def up(state_dir: Path, taskmanagers: int, slots: int) -> Cluster:
    """Start a cluster for this state directory (or return the running one) and record it."""
    current = load(state_dir)
    if current is not None and all(processes.is_running(p) for p in current.processes):
        return current
    down(state_dir)
    cluster = start(state_dir / "flink", taskmanagers, slots)
    (state_dir / STATE_FILE).write_bytes(msgspec.json.encode(cluster))
    return cluster


def load(state_dir: Path) -> Cluster | None:
    try:
        return msgspec.json.decode((state_dir / STATE_FILE).read_bytes(), type=Cluster)
    except FileNotFoundError:
        return None


def down(state_dir: Path) -> bool:
    """Stop the recorded cluster; False if none was recorded. Safe to repeat."""
    cluster = load(state_dir)
    if cluster is None:
        return False
    stop(cluster)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def stop(cluster: Cluster) -> None:
    """Cancel its jobs, then stop TaskManagers and the JobManager, each by its PID."""
    with contextlib.suppress(OSError, ValueError):  # an unreachable JobManager: stop anyway
        cancel_jobs(cluster)
    for record in reversed(cluster.processes):
        processes.stop(record)
