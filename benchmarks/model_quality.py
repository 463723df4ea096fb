"""Model quality on later data, never seen in training.

(a) generator data (the shipped model's documented recipe), trained and evaluated on its own
later time split; (b) every labelled card-transaction file in ``../shared/data/`` (``.csv`` or
``.csv.gz``): trained on every month but the last and evaluated on the last month with the
earlier months as history (what ``fraudstream models evaluate V --data LATER --history
EARLIER`` computes: the stream's view of a later period). Reported per file: PR-AUC, ROC-AUC,
recall at 1 % and 0.1 % FPR, the features with the most gain, and, where the file has a
``fraud_scenario`` column (never a feature), PR-AUC and recall at the 1 %-FPR threshold per
scenario against all legitimate rows.

    python -m benchmarks.model_quality [--json] [--shared-data DIR] [--skip-real]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from benchmarks.provenance import provenance
from models import datasets
from models.errors import DataError
from models.metrics import evaluate
from models.registry import Registry
from models.training import TrainConfig, feature_matrix, scores_for, train
from models.workflow import train_and_publish
from services.clients.produce import FileSink, generated_items, run
from services.core.card_csv import is_card_csv_name, open_text
from services.generator import GeneratorConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPE = GeneratorConfig(seed=7, customers=5_000, fraud_rate=0.01, start_ms=1_767_225_600_000)
RECIPE_COUNT = 300_000


def _quality(data: Path, workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    published = train_and_publish(data, Registry(workdir / data.stem), TrainConfig())
    meta = published.metadata
    metrics = meta["metrics"]
    return {
        "data": data.name,
        "kind": meta["kind"],
        "rows": meta["data"]["rows"],
        "eval_rows": metrics["rows"],
        "eval_positives": metrics["positives"],
        "pr_auc": metrics["pr_auc"],
        "roc_auc": metrics["roc_auc"],
        "recall_at_1pct_fpr": metrics["recall_at_1pct_fpr"],
        "recall_at_0_1pct_fpr": metrics["recall_at_0_1pct_fpr"],
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def _figures(y: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    metrics = evaluate(y, scores).as_dict()
    keys = ("rows", "positives", "pr_auc", "roc_auc", "recall_at_1pct_fpr", "recall_at_0_1pct_fpr")
    return {key: metrics[key] for key in keys} | {"review_threshold": metrics["review"]["score"]}


def _by_scenario(
    path: Path,
    ids: npt.NDArray[np.object_],
    y: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
) -> dict[str, Any]:
    """Per fraud scenario: its frauds against every legitimate row."""
    with open_text(path) as handle:
        header = handle.readline()
    if "fraud_scenario" not in header.strip().split(","):
        return {}
    with open_text(path) as handle:
        scenario = pd.read_csv(handle, usecols=["trans_num", "fraud_scenario"],
                               dtype={"trans_num": str})  # fmt: skip
    of = pd.Series(ids).map(scenario.set_index("trans_num")["fraud_scenario"]).to_numpy()
    cut = _figures(y, scores)["review_threshold"]
    out = {}
    for kind in sorted({int(k) for k in of[y]}):
        rows = ~y | (of == kind)
        flagged = scores[y & (of == kind)] > cut
        out[str(kind)] = {
            "frauds": int((y & (of == kind)).sum()),
            "pr_auc": round(float(evaluate(y[rows], scores[rows]).pr_auc), 6),
            "recall_at_1pct_fpr": round(float(flagged.mean()), 6),
        }
    return out


def _later_month(path: Path) -> dict[str, Any]:
    """Train on every month but the last; score the last with the earlier months as history."""
    started = time.perf_counter()
    whole = datasets.load(path)
    if whole.kind != "transactions":
        raise DataError(f"{path.name}: not transaction data (no card history to keep)")
    month = pd.to_datetime(whole.frame["event_time"], unit="ms", utc=True).dt.strftime("%Y-%m")
    last = month.max()
    earlier = datasets.Dataset(whole.kind, whole.frame[month < last].reset_index(drop=True),
                               whole.fingerprint, f"{path.name} before {last}")  # fmt: skip
    later = datasets.Dataset(whole.kind, whole.frame[month == last].reset_index(drop=True),
                             whole.fingerprint, f"{path.name} {last}")  # fmt: skip
    trained = train(earlier, TrainConfig())
    both = datasets.after_history(earlier, later)
    scored = ~both.frame["history"].to_numpy(bool)
    x = feature_matrix(both)[scored]
    y = both.frame["is_fraud"].to_numpy(bool)[scored]
    scores = scores_for(x, trained.onnx)
    ids = both.frame["transaction_id"].to_numpy()[scored]
    gains = trained.booster.feature_importance("gain")
    top = sorted(zip(gains, whole.feature_names, strict=True), reverse=True)[:8]
    return {
        "data": path.name,
        "protocol": f"train before {last}, evaluate {last} with the earlier months as history",
        "train_rows": int((~scored).sum()),
        **_figures(y, scores),
        "by_scenario": _by_scenario(path, ids, y, scores),
        "top_features_by_gain": [name for _, name in top],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip-real", action="store_true", help="only the generator data")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        generated = workdir / "generated.jsonl"
        run(generated_items(RECIPE, RECIPE_COUNT), FileSink(generated), rate=0,
            labels=workdir / "generated.labels.csv")  # fmt: skip
        quality = [_quality(generated, workdir)]
    shared = args.shared_data
    real = sorted(p for p in shared.iterdir() if is_card_csv_name(p)) if shared.is_dir() else []
    later, skipped = [], []
    for path in [] if args.skip_real else real:
        try:
            later.append(_later_month(path))
        except DataError as error:
            skipped.append({"data": path.name, "reason": str(error)})
    result = {
        "benchmark": "model_quality",
        "quality": quality,
        "later_period": later,
        "real_files_found": [p.name for p in real],
        "skipped": skipped,
        **provenance(),
    }
    if not args.json:
        for row in quality + later:
            print(f"{row['data']:>40}: PR-AUC {row['pr_auc']}  ROC-AUC {row['roc_auc']}  "
                  f"recall@1%FPR {row['recall_at_1pct_fpr']}")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
