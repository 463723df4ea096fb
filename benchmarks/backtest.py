"""Backtest throughput: the development data's four months (1.17 M transactions) decided again
by the shipped model and the shipped strategy, each phase timed.

Phases: loading the file, features and scores (``backtest.scored``: the offline fold over the
range and its history, ONNX Runtime), then the strategy (``backtest.report``: every rule and
threshold per transaction, in event-time order, and the figures). The baseline in the same run
is scoring alone (load, features, ONNX) without a strategy: ``strategy_share`` is what the
what-if part adds. Goal: 1,000,000 transactions in 3 minutes or less on this 2-core machine.

    python -m benchmarks.backtest [--json] [--data FILE] [--from DATE] [--to DATE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.provenance import provenance
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.core.contract import parse_event_time
from stream_jobs import backtest as bt
from stream_jobs import strategy as st

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_FILE = DATA / "fdh_transactions_2018-04_2018-07.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--data", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--from", dest="start", default="2018-04-01T00:00:00Z")
    parser.add_argument("--to", dest="end", default="2018-08-01T00:00:00Z")
    args = parser.parse_args()
    registry = Registry(DEFAULT_REGISTRY)
    version = registry.current() or ""
    window = bt.Range(parse_event_time(args.start), parse_event_time(args.end))
    started = time.perf_counter()
    data = bt.scored(registry, version, args.data, window)
    scored_s = time.perf_counter() - started
    started = time.perf_counter()
    result = bt.report(data, window, [("shipped", st.default())], model_version=version)
    strategy_s = time.perf_counter() - started
    total = scored_s + strategy_s
    events = result["data"]["events"]
    report = {
        "benchmark": "backtest",
        "events": events,
        "history_events": result["data"]["history_events"],
        "load_features_score_s": round(scored_s, 1),
        "strategy_and_figures_s": round(strategy_s, 1),
        "total_s": round(total, 1),
        "events_per_s": round(events / total),
        "strategy_share": round(strategy_s / total, 3),
        "seconds_per_million": round(total / events * 1e6, 1),
        "goal_seconds_per_million": 180,
        "meets_goal": total / events * 1e6 <= 180,
        **provenance(),
    }
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
