"""The registry: atomic versions and pointer, promotion gate, rollback; bad data refused."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from models.errors import DataError, PromotionRefused, RegistryError
from models.features.definitions import ANONYMISED_FEATURE_NAMES, FEATURE_NAMES
from models.training.datasets import load
from models.training.registry import Registry
from models.training.trainer import TrainConfig, train
from tests.unit.test_training import FAST, small_dataset


def _publish(
    registry: Registry, pr_auc: float, payload: bytes = b"model",
    names: tuple[str, ...] = FEATURE_NAMES,
) -> str:  # fmt: skip
    metadata = {"metrics": {"pr_auc": pr_auc}, "feature_names": list(names)}
    return registry.publish({"model.onnx": payload}, metadata)


def test_a_model_of_other_inputs_is_never_promoted_nor_rolled_back_to(tmp_path: Path) -> None:
    """Not even with --force: every request of the job would be refused (on cdc8e54 it went
    live and every decision was rules-only)."""
    registry = Registry(tmp_path)
    other = _publish(registry, 0.99, names=ANONYMISED_FEATURE_NAMES)
    with pytest.raises(PromotionRefused, match="29 it needs that the job does not send"):
        registry.promote(other, force=True)
    assert registry.current() is None
    shuffled = _publish(registry, 0.99, names=tuple(reversed(FEATURE_NAMES)))
    with pytest.raises(PromotionRefused, match="the same names in another order"):
        registry.promote(shuffled, force=True)
    v1, v2 = _publish(registry, 0.9), _publish(registry, 0.9)
    registry.promote(v1)
    registry.promote(v2)
    metadata = registry.path(v1) / "metadata.json"
    meta = json.loads(metadata.read_text()) | {"feature_names": list(ANONYMISED_FEATURE_NAMES)}
    metadata.write_text(json.dumps(meta))  # v1 rewritten by hand: no longer fits
    with pytest.raises(RegistryError, match=f"cannot roll back to {v1}"):
        registry.rollback()
    assert registry.current() == v2


def test_gate_refuses_a_deliberately_worse_model(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    good = train(small_dataset(), FAST)
    noisy = small_dataset()
    noisy.frame["is_fraud"] = noisy.frame["is_fraud"].sample(frac=1.0, random_state=1).to_numpy()
    worse = train(noisy, TrainConfig(max_rounds=30, early_stopping_rounds=10))
    v1 = registry.publish({"model.onnx": good.onnx}, good.metadata)
    v2 = registry.publish({"model.onnx": worse.onnx}, worse.metadata)
    registry.promote(v1)
    with pytest.raises(PromotionRefused) as refused:
        registry.promote(v2)
    message = str(refused.value)
    assert f"{worse.metrics.pr_auc:.4f}" in message
    assert f"{good.metrics.pr_auc:.4f}" in message
    assert registry.current() == v1
    registry.promote(v2, force=True)
    assert registry.current() == v2


def test_gate_allows_a_small_loss_within_tolerance(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    v1, v2 = _publish(registry, 0.90), _publish(registry, 0.895)
    registry.promote(v1)
    registry.promote(v2, tolerance=0.01)
    assert registry.current() == v2
    v3 = _publish(registry, 0.85)
    with pytest.raises(PromotionRefused):
        registry.promote(v3, tolerance=0.01)


def test_rollback_walks_back_through_promotions(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    v1, v2, v3 = (_publish(registry, 0.9) for _ in range(3))
    for version in (v1, v2, v3):
        registry.promote(version)
    assert registry.rollback() == v2
    assert registry.rollback() == v1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    assert [h.action for h in registry.history()] == ["promote"] * 3 + ["rollback"] * 2


def test_a_reader_never_sees_a_half_written_version_or_pointer(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.promote(_publish(registry, 0.9, b"x" * 100_000))
    stop = threading.Event()
    seen: list[str] = []
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            current = registry.current()
            if current is None:
                problems.append("no current")
                continue
            folder = tmp_path / "versions" / current
            try:
                model = (folder / "model.onnx").read_bytes()
                meta = json.loads((folder / "metadata.json").read_text())
            except (OSError, ValueError) as error:
                problems.append(f"{current}: {error}")
                continue
            if len(model) != 100_000 or meta["version"] != current:
                problems.append(f"{current}: partial")
            seen.append(current)
            for name in registry.versions():
                if not (tmp_path / "versions" / name / "metadata.json").is_file():
                    problems.append(f"listed {name} without metadata")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(40):
            registry.promote(_publish(registry, 0.9, b"x" * 100_000))
            registry.rollback()
            registry.promote(registry.versions()[-1])
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert len(set(seen)) > 1  # the reader really saw the pointer move


def test_unknown_versions_are_named(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="no version v0042"):
        registry.promote("v0042")
    with pytest.raises(RegistryError, match="not a version name"):
        registry.metadata("../etc")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("wrong.csv", "a,b,c\n1,2,3\n", "not a known format"),
        ("empty.csv", "", "not a known format"),
        ("header_only.csv", "Time," + ",".join(f"V{i}" for i in range(1, 29)) + ",Amount,Class\n",
         "no rows"),
        ("no_fraud.csv", "Time," + ",".join(f"V{i}" for i in range(1, 29)) + ",Amount,Class\n"
         + "0," + ",".join("0.1" for _ in range(28)) + ",9.99,0\n", "no positive"),
        ("data.parquet", "x", "expected a .jsonl"),
        ("events.jsonl", '{"transaction_id": "x"}\n', "labels file"),
    ],
)  # fmt: skip
def test_bad_data_is_refused_with_a_clear_message(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load(path)


def test_card_csv_without_a_needed_column_names_it(tmp_path: Path) -> None:
    from tests.unit.test_card_csv import HEADER, ROWS

    path = tmp_path / "cards.csv"
    path.write_text("\n".join([HEADER.replace(",amt,", ",amount,"), *ROWS]) + "\n")
    with pytest.raises(Exception, match="missing columns amt"):
        load(path)


def test_the_working_registry_is_a_seeded_copy_in_the_state_dir(tmp_path: Path) -> None:
    from models.training.registry import DEFAULT_REGISTRY, working_registry

    state = tmp_path / "state"
    path = working_registry(None, state)
    assert path == state / "registry"
    assert Registry(path).current() == Registry(DEFAULT_REGISTRY).current()
    (path / "CURRENT").write_text("v9999\n")  # a later promotion there stays there
    assert working_registry(None, state) == path
    assert (path / "CURRENT").read_text() == "v9999\n"
    assert Registry(DEFAULT_REGISTRY).current() != "v9999"
    assert working_registry(tmp_path / "mine", state) == tmp_path / "mine"
