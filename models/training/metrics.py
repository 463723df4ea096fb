"""Model quality figures: PR-AUC, ROC-AUC, recall at fixed false-positive rates, thresholds.

Thresholds are chosen on the evaluation split by false-positive rate, the budget a fraud team
actually has: ``review`` lets 1 % of legitimate traffic through to analysts, ``decline``
0.1 % to an outright refusal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

REVIEW_FPR = 0.01
DECLINE_FPR = 0.001


@dataclass(frozen=True)
class Threshold:
    score: float
    precision: float
    recall: float
    fpr: float


@dataclass(frozen=True)
class Metrics:
    rows: int
    positives: int
    pr_auc: float
    roc_auc: float
    recall_at_1pct_fpr: float
    recall_at_0_1pct_fpr: float
    review: Threshold
    decline: Threshold

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _at_fpr(y: npt.NDArray[np.bool_], score: npt.NDArray[np.float64], fpr: float) -> Threshold:
    """The lowest threshold whose false-positive rate stays within ``fpr``."""
    negatives = np.sort(score[~y])[::-1]
    allowed = int(np.floor(fpr * negatives.size))
    # Scores above the (allowed+1)-th highest negative: at most `allowed` false positives.
    cut = float(negatives[allowed]) if allowed < negatives.size else float(negatives[-1])
    flagged = score > cut
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    return Threshold(
        score=round(cut, 6),
        precision=round(tp / (tp + fp), 6) if tp + fp else 0.0,
        recall=round(tp / int(y.sum()), 6),
        fpr=round(fp / negatives.size, 6),
    )


def evaluate(y_true: npt.ArrayLike, score: npt.ArrayLike) -> Metrics:
    """Every figure for scores against labels (both classes must be present)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError("evaluation needs both fraud and legitimate rows")
    review, decline = _at_fpr(y, s, REVIEW_FPR), _at_fpr(y, s, DECLINE_FPR)
    return Metrics(
        rows=int(y.size),
        positives=int(y.sum()),
        pr_auc=round(float(average_precision_score(y, s)), 6),
        roc_auc=round(float(roc_auc_score(y, s)), 6),
        recall_at_1pct_fpr=review.recall,
        recall_at_0_1pct_fpr=decline.recall,
        review=review,
        decline=decline,
    )


def pr_curve(y_true: npt.ArrayLike, score: npt.ArrayLike) -> tuple[list[float], list[float]]:
    """Precision and recall along the threshold, for plotting."""
    precision, recall, _ = precision_recall_curve(np.asarray(y_true, bool), np.asarray(score))
    return precision.tolist(), recall.tolist()
