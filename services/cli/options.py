"""CLI options that map onto settings, shared by every command module."""

from __future__ import annotations

from typing import Any

import typer

from services.core.settings import env_var


def setting_option(setting: str, help_text: str, flag: str | None = None) -> Any:
    """A CLI option that overrides one setting and shows its environment variable."""
    return typer.Option(
        f"--{flag or setting.replace('_', '-')}",
        envvar=env_var(setting),
        show_envvar=True,
        help=help_text,
    )
