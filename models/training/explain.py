"""Reason codes: the features that pushed a row's score up the most.

Path attribution (Saabas, as in ``treeinterpreter``): walking a tree from the root to the
row's leaf, each split moves the expected value by (child value - node value); that move is
credited to the split's feature. Summed over trees, the contributions plus the trees' root
values equal the row's raw score (log-odds) exactly. Per leaf the sums are precomputed, so
explaining a row is one ``pred_leaf`` call and a table lookup: measured here at well under a
millisecond, against about 4 ms per row for LightGBM's exact TreeSHAP (``pred_contrib``),
which ranks features similarly but would dominate the scoring service's latency.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from scipy import sparse


class PathExplainer:
    """Per-feature contributions of a LightGBM model, precomputed per leaf.

    Building the table walks every tree in Python (a third of a second for the shipped
    model), so training stores it beside the model (``explainer.npz``) and the scoring
    service only loads it: a model swap then holds the interpreter lock for milliseconds.
    """

    BLOCK = 256  # rows explained at once (their leaves and contributions in memory)

    def __init__(self, booster: lgb.Booster, names: Sequence[str],
                 table: npt.NDArray[np.float64], offsets: npt.NDArray[np.int64],
                 baseline: float, threads: int = 0) -> None:  # fmt: skip
        """``threads``: LightGBM's for the leaf lookup (0: its default, every core). The
        scoring service passes its own: OpenMP threads spin-waiting for a core its other
        requests hold cost milliseconds under load, for the few rows explained."""
        self._booster, self._names, self._threads = booster, tuple(names), threads
        self.table, self.offsets, self.baseline = table, offsets, baseline

    @classmethod
    def build(cls, booster: lgb.Booster, names: Sequence[str], threads: int = 0) -> PathExplainer:
        trees = booster.dump_model()["tree_info"]
        offsets = np.zeros(len(trees), dtype=np.int64)
        blocks: list[npt.NDArray[np.float64]] = []
        baseline, start = 0.0, 0
        for t, tree in enumerate(trees):
            offsets[t] = start
            start += tree["num_leaves"]
            table = np.zeros((tree["num_leaves"], len(names)), dtype=np.float64)
            root = tree["tree_structure"]
            baseline += _value(root)
            _walk(root, np.zeros(len(names)), table)
            blocks.append(table)
        joined = np.concatenate(blocks) if blocks else np.zeros((0, len(names)))
        return cls(booster, names, joined, offsets, baseline, threads)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, table=self.table, offsets=self.offsets,
                            baseline=np.array(self.baseline))  # fmt: skip
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, booster: lgb.Booster, names: Sequence[str], data: bytes,
                   threads: int = 0) -> PathExplainer:  # fmt: skip
        with np.load(io.BytesIO(data)) as arrays:
            return cls(booster, names, arrays["table"], arrays["offsets"],
                       float(arrays["baseline"]), threads)  # fmt: skip

    def contributions(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """(rows, features): each feature's share of each row's raw score above baseline."""
        found = self._booster.predict(rows, pred_leaf=True, num_threads=self._threads)
        leaves = np.asarray(found, dtype=np.int64).reshape(len(rows), -1) + self.offsets
        # Each row's leaves as a sparse (rows x all leaves) indicator times the per-leaf
        # table: the sum over trees without a (rows x trees x features) array. Measured on
        # the shipped model against that gather: 20 µs against 11 for one row, 39 against 58
        # for six, 1 ms against 5.4 for 256.
        trees = leaves.shape[1]
        indicator = sparse.csr_array(
            (np.ones(leaves.size), leaves.ravel(), np.arange(len(rows) + 1) * trees),
            shape=(len(rows), len(self.table)),
        )
        result: npt.NDArray[np.float64] = indicator @ self.table
        return result

    def top(self, rows: npt.NDArray[np.float32], k: int = 3) -> list[list[str]]:
        """Per row, up to ``k`` features with the largest positive contribution, largest
        first; a row no feature pushed up gets the one that held it down least."""
        return [why for start in range(0, len(rows), self.BLOCK)
                for why in self._top(rows[start : start + self.BLOCK], k)]  # fmt: skip

    def _top(self, rows: npt.NDArray[np.float32], k: int) -> list[list[str]]:
        contributions = self.contributions(rows)
        order = np.argsort(-contributions, axis=1)[:, :k]
        values = np.take_along_axis(contributions, order, axis=1)
        names = self._names
        return [
            [names[j] for j, value in zip(ranked, row, strict=True) if value > 0]
            or [names[ranked[0]]]
            for ranked, row in zip(order.tolist(), values.tolist(), strict=True)
        ]


def _value(node: dict[str, Any]) -> float:
    return float(node["leaf_value"] if "leaf_index" in node else node["internal_value"])


def _walk(
    node: dict[str, Any], path: npt.NDArray[np.float64], table: npt.NDArray[np.float64]
) -> None:
    if "leaf_index" in node:
        table[node["leaf_index"]] = path
        return
    here, feature = _value(node), node["split_feature"]
    for side in ("left_child", "right_child"):
        child = node[side]
        step = path.copy()
        step[feature] += _value(child) - here
        _walk(child, step, table)


def top_reasons(
    booster: lgb.Booster, rows: npt.NDArray[np.float32], names: Sequence[str], k: int = 3
) -> list[list[str]]:
    """One-off convenience: build the explainer and explain ``rows``."""
    return PathExplainer.build(booster, names).top(rows, k)
