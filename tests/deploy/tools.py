"""Where the deployment checks find their tools: built once by ``.ci/tools`` into a cache."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

TOOLS = Path(os.environ.get("FRAUDSTREAM_TOOLS_DIR", Path.home() / ".cache/fraudstream/tools/bin"))


def tool(name: str) -> str:
    """The tool's path (the cache, then this environment's scripts, then PATH); a missing one
    fails the test (CI builds it: ``.ci/tools``)."""
    path = os.pathsep.join([str(TOOLS), str(Path(sys.executable).parent), os.environ["PATH"]])
    found = shutil.which(name, path=path)
    if found is None:
        pytest.fail(f"{name} is not installed: run .ci/tools (it builds into {TOOLS})")
    return found
