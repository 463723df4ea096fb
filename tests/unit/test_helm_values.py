"""The Helm values map one to one onto the settings, secrets kept apart."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import SecretStr

from services.settings import Settings

VALUES = Path(__file__).parents[2] / "helm" / "fraudstream" / "values.yaml"


def test_values_cover_every_setting_and_secrets_are_in_the_secret() -> None:
    values = yaml.safe_load(VALUES.read_text())
    secret_fields = {
        name
        for name, field in Settings.model_fields.items()
        if field.annotation is not None and SecretStr in getattr(field.annotation, "__args__", ())
    }
    assert set(values["secrets"]) == secret_fields
    assert set(values["config"]) == set(Settings.model_fields) - secret_fields


def test_default_values_are_valid_settings() -> None:
    config = {k: v for k, v in yaml.safe_load(VALUES.read_text())["config"].items() if v != ""}
    Settings(**config)  # raises naming the setting if a default in the chart is invalid
