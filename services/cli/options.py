"""CLI options that map onto settings, shared by every command module."""

from __future__ import annotations

from typing import Any

import typer

from services.core.kafka_check import check_kafka
from services.core.settings import Settings, env_var, load_settings


def kafka_settings(**overrides: Any) -> Settings:
    """The settings of a command that uses Kafka, once Kafka has answered this client's login
    (else one line naming the cause: authentication, a certificate, an unreachable broker)."""
    settings = load_settings(**overrides)
    check_kafka(settings.kafka)
    return settings


def setting_option(setting: str, help_text: str, flag: str | None = None) -> Any:
    """A CLI option that overrides one setting and shows its environment variable."""
    return typer.Option(
        f"--{flag or setting.replace('_', '-')}",
        envvar=env_var(setting),
        show_envvar=True,
        help=help_text,
    )
