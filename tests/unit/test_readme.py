"""The README's three commands, as CI runs them: `.ci/run` installs the project with the set-up
command and runs the test command written here, so neither may drift. The reference,
the settings table among it, is in docs/ (tests/unit/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).parents[2] / "README.md"

SET_UP = "python3 -m venv .venv && .venv/bin/pip install -e '.[all,dev]'"
MAIN_JOB = ".venv/bin/fraudstream demo --rate 1000 --duration 30"
TESTS = ".venv/bin/pytest"


def test_the_three_commands_are_in_the_readme_as_ci_runs_them() -> None:
    text = README.read_text()
    block = text.split("## The three commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == [SET_UP, MAIN_JOB, TESTS]


def test_the_readme_maps_the_documentation() -> None:
    text = README.read_text()
    for page in ("getting-started", "contract", "configuration", "operations", "deployment"):
        assert f"](docs/{page}.md)" in text, page
