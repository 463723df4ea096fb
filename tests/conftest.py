"""Shared test helpers: run the real ``fraudstream`` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

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
