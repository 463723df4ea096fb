"""Reason codes: the features that pushed a row's score up the most.

LightGBM's ``pred_contrib`` gives each feature's exact additive (SHAP) contribution to the
row's log-odds for tree models; the top positive ones are what an analyst reads first.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
import numpy.typing as npt


def top_reasons(
    booster: lgb.Booster,
    rows: npt.NDArray[np.float32],
    names: Sequence[str],
    k: int = 3,
) -> list[list[str]]:
    """Per row, up to ``k`` feature names with the largest positive contribution, largest
    first; a row that no feature pushed up (its score is the baseline's) gets the one feature
    that held it down least, so every explained row has a reason."""
    contributions = np.asarray(booster.predict(rows, pred_contrib=True))[:, :-1]  # last: bias
    order = np.argsort(-contributions, axis=1)[:, :k]
    return [
        [names[j] for j in ranked if contributions[i, j] > 0] or [names[ranked[0]]]
        for i, ranked in enumerate(order)
    ]
