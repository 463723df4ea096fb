"""A small model of the generator's declared signals, for the tests that serve one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.features.definitions import LABEL_DELAY_MS
from models.features.entities import serving_names
from models.training.datasets import Dataset, frame_from_transactions
from models.training.explain import PathExplainer
from models.training.registry import Registry
from models.training.trainer import TrainConfig, Trained, train
from services.generator import GeneratorConfig, generate
from services.generator.signals import generated_signals


def trained_signals_model() -> tuple[Trained, pd.DataFrame]:
    """A model on 8,000 generated events with attributes, and their frame."""
    signals = generated_signals()
    config = GeneratorConfig(seed=9, customers=400, fraud_rate=0.05, attributes=True)
    items = list(generate(config, 8_000))
    frame = frame_from_transactions([i.transaction for i in items], signals)
    frame["is_fraud"] = [i.is_fraud for i in items]
    frame["label_time"] = frame["event_time"] + LABEL_DELAY_MS
    dataset = Dataset("transactions", frame, "f" * 64, "generated", signals)
    return train(dataset, TrainConfig(max_rounds=60)), frame


def publish(trained: Trained, root: Path) -> str:
    """The model as a new current version of the registry at ``root``."""
    names = serving_names(generated_signals())
    registry = Registry(root, names)
    files = {"model.onnx": trained.onnx, "model.txt": trained.booster.model_to_string().encode(),
             "explainer.npz": PathExplainer.build(trained.booster, names).to_bytes()}  # fmt: skip
    version = registry.publish(files, trained.metadata)
    registry.promote(version, force=True)
    return version
