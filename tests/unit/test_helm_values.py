"""The Helm values map one to one onto the settings, secrets kept apart, no local-stack knob."""

from __future__ import annotations

import typing
from pathlib import Path

import yaml
from pydantic import SecretStr

from services.core.settings import GROUPS, Settings

VALUES = Path(__file__).parents[2] / "helm" / "fraudstream" / "values.yaml"


def test_values_cover_every_setting_and_secrets_are_in_the_secret() -> None:
    values = yaml.safe_load(VALUES.read_text())
    deployable = {name for name, _ in Settings().flat() if not name.startswith("stack_")}
    secret_fields = {
        f"{group}_{name}"
        for group, model in GROUPS.items()
        for name, info in model.model_fields.items()
        if SecretStr in typing.get_args(info.annotation)
    }
    assert set(values["secrets"]) == secret_fields
    # Where the chart mounts its volumes: set by the chart, not a value.
    mounted = {"state_dir", "lake_dir", "model_registry"}
    assert set(values["config"]) == deployable - secret_fields - mounted


def test_default_values_are_valid_settings() -> None:
    config = {k: v for k, v in yaml.safe_load(VALUES.read_text())["config"].items() if v != ""}
    Settings.of(**config)  # raises naming the setting if a default in the chart is invalid
