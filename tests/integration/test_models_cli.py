"""`fraudstream train` and `fraudstream models`, as a user runs them; the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.training.registry import DEFAULT_REGISTRY, Registry
from services.generator import GeneratorConfig, generate
from tests.conftest import Run
from tests.unit.test_datasets import write_card_csv

pytestmark = pytest.mark.integration

# The documented recipe of the shipped default model (docs/models.md, "The default model").
RECIPE_PRODUCE = (
    *("produce", "--seed", "7", "--count", "300000", "--customers", "5000"),
    *("--fraud-rate", "0.01", "--rate", "0", "--start", "2026-01-01T00:00:00Z"),
)


def _json(result: object) -> dict[str, object]:
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    loaded: dict[str, object] = json.loads(result.stdout)  # type: ignore[attr-defined]
    return loaded


def test_train_promote_rollback_evaluate(fraudstream: Run, tmp_path: Path) -> None:
    data = tmp_path / "small.jsonl"
    _json(
        fraudstream(
            *("produce", "--seed", "3", "--count", "60000", "--customers", "1500"),
            *("--fraud-rate", "0.02", "--rate", "0", "--out", str(data), "--json"),
        )
    )
    assert (tmp_path / "small.labels.csv").is_file()
    registry = tmp_path / "registry"
    first = _json(fraudstream("train", "--data", str(data), "--registry", str(registry), "--json"))
    assert first["version"] == "v0001"
    assert first["promoted"] is True  # an empty registry takes its first model
    second = _json(fraudstream("train", "--data", str(data), "--registry", str(registry),
                               "--seed", "8", "--json"))  # fmt: skip
    assert second["promoted"] is False
    for name in ("model.onnx", "model.txt", "explainer.npz", "metadata.json", "pr_curve.png"):
        assert (registry / "versions" / "v0002" / name).stat().st_size > 0
    promoted = _json(fraudstream("models", "promote", "v0002", "--registry", str(registry),
                                 "--tolerance", "0.5", "--json"))  # fmt: skip
    assert promoted["current"] == "v0002"
    listed = _json(fraudstream("models", "list", "--registry", str(registry), "--json"))
    assert listed["current"] == "v0002"
    rolled = _json(fraudstream("models", "rollback", "--registry", str(registry), "--json"))
    assert rolled["current"] == "v0001"
    evaluated = _json(fraudstream("models", "evaluate", "v0001", "--data", str(data),
                                  "--registry", str(registry), "--json"))  # fmt: skip
    metrics = first["metrics"]
    assert isinstance(metrics, dict)
    for key in ("pr_auc", "roc_auc", "recall_at_1pct_fpr"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6)  # same later split


def test_evaluate_a_later_period_with_its_history(fraudstream: Run, tmp_path: Path) -> None:
    items = list(generate(GeneratorConfig(seed=6, customers=500, fraud_rate=0.03), 20_000))
    earlier = write_card_csv(tmp_path / "earlier.csv.gz", items[:15_000], bare=True)
    later = write_card_csv(tmp_path / "later.csv.gz", items[15_000:], bare=True)
    base = ("models", "evaluate", "v0001", "--registry", str(DEFAULT_REGISTRY), "--json")
    alone = _json(fraudstream(*base, "--data", str(later), "--all-rows"))
    seen = _json(fraudstream(*base, "--data", str(later), "--history", str(earlier)))
    assert seen["rows"] == alone["rows"] == 5_000  # only the later rows are scored
    for key in ("pr_auc", "roc_auc", "recall_at_1pct_fpr", "recall_at_0_1pct_fpr"):
        assert 0.0 <= float(seen[key]) <= 1.0  # type: ignore[arg-type]
    assert seen["pr_auc"] != alone["pr_auc"]  # the history changed the features


@pytest.mark.parametrize(
    ("content", "needle"),
    [("", "not a known format"), ("when,card,value\n1,2,3\n", "not a known format")],
)
def test_bad_data_is_one_line(fraudstream: Run, tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = fraudstream("train", "--data", str(path), "--registry", str(tmp_path / "r"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert needle in result.stderr


def test_the_documented_recipe_reproduces_the_shipped_model(
    fraudstream: Run, tmp_path: Path
) -> None:
    shipped = Registry(DEFAULT_REGISTRY)
    current = shipped.current()
    assert current is not None
    expected = shipped.metadata(current)
    data = tmp_path / "generated.jsonl"
    _json(fraudstream(*RECIPE_PRODUCE, "--out", str(data), "--json"))
    trained = _json(fraudstream("train", "--data", str(data), "--seed", "7",
                                "--registry", str(tmp_path / "registry"), "--json"))  # fmt: skip
    assert trained["data"]["fingerprint"] == expected["data"]["fingerprint"]  # type: ignore[index]
    metrics = trained["metrics"]
    assert isinstance(metrics, dict)
    for key in ("pr_auc", "roc_auc", "recall_at_1pct_fpr", "recall_at_0_1pct_fpr"):
        assert metrics[key] == pytest.approx(expected["metrics"][key], abs=1e-6), key
