"""Start, identify and stop the local processes the project runs (broker, Redis, services).

A process is recorded with its PID *and* its kernel start time, so ``stop`` never signals an
unrelated process that reused a PID after ours exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec


class ProcessRecord(msgspec.Struct, frozen=True):
    """A process we started: enough to find it again and to stop exactly it."""

    name: str
    pid: int
    start_ticks: int
    log: str


class WaitTimeout(TimeoutError):
    """A condition did not hold before its deadline."""


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` until true; raise WaitTimeout naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} not ready after {timeout:.0f} s")
        time.sleep(interval)


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat from the third (state) on, or None if it has gone. The
    command name (field 2) may contain spaces and parentheses: the rest follows the last ')'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


def spawn(
    name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> ProcessRecord:
    """Start a detached process (own session) writing to ``log_path``; record how to find it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    ticks = _start_ticks(proc.pid)
    return ProcessRecord(name=name, pid=proc.pid, start_ticks=ticks or 0, log=str(log_path))


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded process (not merely its PID) is alive and not a zombie."""
    ticks = _start_ticks(record.pid)
    if ticks is None or ticks != record.start_ticks:
        return False
    fields = stat_fields(record.pid)
    return fields is not None and fields[0] != "Z"


def _reap(pid: int) -> None:
    # Our own children become zombies until waited for; other processes' are reaped by init.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(record: ProcessRecord, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True if it was running. Safe to repeat."""
    if not is_running(record):
        return False
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_running(record):
            return True
        time.sleep(0.05)
    os.kill(record.pid, signal.SIGKILL)
    while is_running(record):
        _reap(record.pid)
        time.sleep(0.02)
    return True
