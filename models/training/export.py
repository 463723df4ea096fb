"""ONNX export of a LightGBM booster, refused unless ONNX Runtime agrees with LightGBM."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType

from models.errors import ExportError

INPUT_NAME = "features"
PROBABILITY_OUTPUT = "probabilities"  # (rows, 2): P(legit), P(fraud)
MAX_DIFFERENCE = 1e-5
_OPSET = 15


def session(model: bytes, threads: int = 1) -> ort.InferenceSession:
    """An inference session that does not flood logs with per-call shape warnings."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def fraud_probability(
    sess: ort.InferenceSession, rows: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """P(fraud) per row."""
    _, probabilities = sess.run(None, {INPUT_NAME: rows})
    result: npt.NDArray[np.float32] = probabilities[:, 1]
    return result


def to_onnx(booster: lgb.Booster, check_rows: npt.NDArray[np.float32]) -> bytes:
    """Serialised ONNX model; raises ExportError if it differs from the booster on the rows."""
    model = convert_lightgbm(
        booster,
        initial_types=[(INPUT_NAME, FloatTensorType([None, booster.num_feature()]))],
        zipmap=False,
        target_opset=_OPSET,
    )
    serialised: bytes = model.SerializeToString()
    onnx_scores = fraud_probability(session(serialised), check_rows)
    native = booster.predict(check_rows)
    worst = float(np.max(np.abs(onnx_scores - native))) if len(check_rows) else 0.0
    if worst > MAX_DIFFERENCE:
        raise ExportError(f"ONNX and LightGBM differ by {worst:.2e} (> {MAX_DIFFERENCE:.0e})")
    return serialised
