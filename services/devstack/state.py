"""The embedded stack's state file: endpoints and the processes to stop, shared by all commands."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from services.core.settings import STACK_FILE as STATE_FILE
from services.core.settings import StackEndpoints
from services.devstack.processes import ProcessRecord


class StackState(StackEndpoints, frozen=True, kw_only=True):
    """What ``stack up`` started; clients read the endpoints part (``StackEndpoints``)."""

    broker_port: int
    redis_port: int
    redis_cluster_ports: list[int] = msgspec.field(default_factory=list)  # the first: redis_port
    controller_port: int = 0  # Kafka's KRaft controller listener
    topics: dict[str, int]
    processes: list[ProcessRecord]
    java_home: str | None
    started_at: int
    prometheus_url: str | None = None  # with --monitoring
    workbench_url: str | None = None  # None when the workbench extra is not installed


def read(state_dir: Path) -> StackState | None:
    """The recorded state, or None when no stack was started from this state directory."""
    path = state_dir / STATE_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=StackState)
    except FileNotFoundError:
        return None


def write(state_dir: Path, state: StackState) -> None:
    """Replace the state file atomically, so a concurrent reader sees old or new, never half."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    tmp.replace(state_dir / STATE_FILE)


def remove(state_dir: Path) -> None:
    """Forget the stack (after its processes are stopped)."""
    (state_dir / STATE_FILE).unlink(missing_ok=True)
