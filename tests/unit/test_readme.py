"""The README's configuration table documents every setting."""

from __future__ import annotations

from pathlib import Path

from services.core.settings import ENV_PREFIX, Settings

README = Path(__file__).parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [name for name, _ in Settings().flat() if f"`{ENV_PREFIX}{name.upper()}`" not in text]
    assert missing == []
