"""Shared test helpers: run the real ``fraudstream`` command as a user would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.devstack import processes
from services.devstack.stack import start_redis
from tests.environment import without_settings

CLI = Path(sys.executable).with_name("fraudstream")
Run = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier of a test is its folder: tests/unit (pure functions and a real Redis at most)
    or tests/integration (real processes); ``-m unit`` runs the fast tier alone."""
    for item in items:
        if "tests/unit/" in item.path.as_posix():
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def fraudstream(tmp_path: Path) -> Run:
    """Run the installed CLI with its state directory inside this test's tmp_path."""
    env = without_settings()
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
    url, record = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        processes.stop(record)
