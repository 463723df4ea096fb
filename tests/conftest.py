"""Shared test helpers: run the real ``fraudstream`` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from services import processes
from services.stack import redis_server_binary

CLI = Path(sys.executable).with_name("fraudstream")
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def fraudstream(tmp_path: Path) -> Run:
    """Run the installed CLI with its state directory inside this test's tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env["FRAUDSTREAM_STATE_DIR"] = str(tmp_path / "state")

    def run(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args], capture_output=True, text=True, timeout=timeout, env=env,
            cwd=tmp_path, check=False,
        )  # fmt: skip

    return run


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server on a free loopback port, stopped by its PID at the end."""
    port = processes.free_loopback_port()
    logs = tmp_path_factory.mktemp("redis") / "redis.log"
    argv = [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no"]  # fmt: skip
    record = processes.spawn("redis", argv, logs)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        processes.wait_until(
            lambda: bool(redis.Redis.from_url(url, socket_timeout=1).ping()), 30, "test redis"
        )
        yield url
    finally:
        processes.stop(record)
