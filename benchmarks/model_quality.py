"""Model quality on the later time split, and the online feature update's cost per row.

(a) generator data (the shipped model's documented recipe), (b) every labelled file in
``../shared/data/`` (public card-transaction CSV or the anonymised Time/V1..V28 format), each
trained and evaluated on its own later time split. Then µs per row of the online feature
update against a real Redis, pipelined (batches of 64) and unpipelined (one round trip per
event), beside the offline implementation on the same rows in the same run.

    python -m benchmarks.model_quality [--json] [--shared-data DIR] [--skip-real]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.provenance import provenance
from models import offline
from models.datasets import frame_from_transactions
from models.errors import DataError
from models.online import OnlineFeatureStore
from models.registry import Registry
from models.training import TrainConfig
from models.workflow import train_and_publish
from services.clients.produce import FileSink, generated_items, run
from services.devstack import processes
from services.devstack.stack import start_redis
from services.generator import GeneratorConfig, generate

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


def _online_cost(workdir: Path, count: int) -> dict[str, float]:
    items = list(generate(GeneratorConfig(seed=11, customers=2_000), count))
    events = sorted(
        (i.transaction for i in items), key=lambda t: (t.event_time_ms, t.transaction_id)
    )
    url, record = start_redis(workdir / "redis")
    try:
        client = redis.Redis.from_url(url)
        store = OnlineFeatureStore(client)
        timings = {}
        for name, batch in (("pipelined_64", 64), ("unpipelined", 1)):
            client.flushdb()
            started = time.perf_counter()
            for i in range(0, len(events), batch):
                store.update(events[i : i + batch])
            timings[name] = (time.perf_counter() - started) / len(events) * 1e6
        client.close()
    finally:
        processes.stop(record)
    frame = frame_from_transactions(events)
    started = time.perf_counter()
    offline.compute(frame)
    offline_us = (time.perf_counter() - started) / len(events) * 1e6
    return {
        "online_us_per_row_pipelined_64": round(timings["pipelined_64"], 1),
        "online_us_per_row_unpipelined": round(timings["unpipelined"], 1),
        "offline_us_per_row": round(offline_us, 2),
        "pipelining_speedup": round(timings["unpipelined"] / timings["pipelined_64"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--skip-real", action="store_true", help="only the generator data")
    parser.add_argument("--online-rows", type=int, default=20_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        generated = workdir / "generated.jsonl"
        run(generated_items(RECIPE, RECIPE_COUNT), FileSink(generated), rate=0,
            labels=workdir / "generated.labels.csv")  # fmt: skip
        quality = [_quality(generated, workdir)]
        real = sorted(args.shared_data.glob("*.csv")) if args.shared_data.is_dir() else []
        skipped = []
        for path in [] if args.skip_real else real:
            try:
                quality.append(_quality(path, workdir))
            except DataError as error:
                skipped.append({"data": path.name, "reason": str(error)})
        online = _online_cost(workdir, args.online_rows)
    result = {
        "benchmark": "model_quality",
        "quality": quality,
        "real_files_found": [p.name for p in real],
        "skipped": skipped,
        **online,
        **provenance(),
    }
    if not args.json:
        for row in quality:
            print(f"{row['data']:>28}: PR-AUC {row['pr_auc']}  ROC-AUC {row['roc_auc']}  "
                  f"recall@1%FPR {row['recall_at_1pct_fpr']}")  # fmt: skip
        print(f"online features: {online}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
