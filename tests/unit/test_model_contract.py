"""The shipped model's ONNX input and metadata list exactly the features the job computes."""

from __future__ import annotations

import json

import onnxruntime as ort

from models.features.definitions import FEATURE_NAMES
from models.training.registry import DEFAULT_REGISTRY, Registry


def test_onnx_input_and_metadata_match_feature_names() -> None:
    registry = Registry(DEFAULT_REGISTRY)
    version = registry.current()
    assert version is not None
    folder = registry.path(version)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert tuple(metadata["feature_names"]) == tuple(FEATURE_NAMES)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (tensor,) = session.get_inputs()
    assert tensor.shape[-1] == len(FEATURE_NAMES)
