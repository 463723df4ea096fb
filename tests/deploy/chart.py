"""The chart as a user installs it: the values every install must give, the toggles, and
``helm template`` through the real helm."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "fraudstream"
SCHEMAS = ROOT / "tests" / "schemas"
KUBERNETES = "1.37.0"
NAMESPACE = "fraud"
# What a user must give: where their images are, the tokenization key, the workbench's
# database and session key (their secret store), and a bucket of their own.
REQUIRED: dict[str, Any] = {
    "image": {"registry": "registry.bank.example/fraud"},
    "secrets": {
        "token_key": "5e" * 32,
        "workbench_database_url": "postgresql+psycopg://fraud@cases-db/cases",
        "workbench_session_key": "7a" * 32,
    },
    "job": {"checkpointDir": "s3://bank-fraud-flink/fraudstream"},
}
ALL_ON = {
    "monitoring": {
        "additionalLabels": {"release": "kube-prometheus-stack"},
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    },
}
TOGGLES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "every monitoring object": ALL_ON,
    "an existing secret": {"existingSecret": "bank-secrets", "secrets": {"token_key": ""}},
    "autoscaling on in-flight requests": {
        "scoring": {"autoscaling": {"targetInFlightPerPod": "16"}}
    },
    "no autoscaler, job, training or network policy": {
        "scoring": {"autoscaling": {"enabled": False}},
        "job": {"enabled": False},
        "training": {"enabled": False},
        "networkPolicy": {"enabled": False},
    },
    "claims of the user's, MinIO, no HA, four slots": {
        "storage": {"models": {"existingClaim": "models"}, "lake": {"existingClaim": "lake"}},
        "job": {
            "highAvailability": False,
            "taskManager": {"slots": 4},
            "s3": {
                "endpoint": "http://minio.storage:9000",
                "pathStyleAccess": True,
                "credentialsSecret": "minio",
            },
            "serviceAccount": {"create": False},
        },
    },
}


def merged(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``more`` over ``base``, nested mappings merged (as helm merges values files)."""
    out = dict(base)
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def helm(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """The real helm on the chart, ``values`` as a values file on standard input."""
    argv = [tool("helm"), *args]
    if values is not None:
        argv += ["--values", "-"]
    return subprocess.run(
        argv,
        input=json.dumps(values or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def template(values: dict[str, Any], release: str = "fs") -> str:
    """``helm template`` of the chart with the required values and ``values`` over them."""
    done = helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBERNETES,
        values=merged(REQUIRED, values),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]
