"""A capacity plan from measured per-core costs: for a load in transactions/s, how many
TaskManager slots, Kafka partitions, Redis Cluster shards and scoring pods it takes, and which
part runs out first.

The costs come from the other benchmarks' JSON, so the plan follows the code:

- a slot (one PyFlink subtask, its Python worker: one core) decides ``e2e``'s PyFlink backlog
  rate divided by the job's parallelism;
- a Redis shard (one core: Redis runs commands on one thread) spends ``features``'s
  ``redis_cpu_us_per_event`` per event;
- a scoring pod (one core, one worker) serves ``scoring``'s rows/s at saturation, halved:
  that figure was taken with its client on the same two cores;
- partitions: two per slot (a slot reads whole partitions; two leave room to add slots
  without re-partitioning, and keep a card's events in order).

Each part is planned at ``--utilisation`` (0.6: headroom for bursts and a lost node). The
first bottleneck is the part that needs the most cores: the one to measure and make cheaper
first.

    python -m benchmarks.capacity --e2e E2E.json --features FEATURES.json --scoring SCORING.json
        [--load 1000 10000 13236] [--utilisation 0.6] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.provenance import provenance

LOADS = (1_000, 10_000, 13_236)  # 13,236: VisaNet's stated peak, transactions per second
PARTITIONS_PER_SLOT = 2


@dataclass(frozen=True)
class Costs:
    """What one core of each part sustains, in events (rows) per second."""

    slot_events_per_s: float
    redis_shard_events_per_s: float
    scoring_pod_rows_per_s: float

    @classmethod
    def of(cls, e2e: dict[str, Any], features: dict[str, Any], scoring: dict[str, Any],
           parallelism: int) -> Costs:  # fmt: skip
        return cls(
            slot_events_per_s=e2e["pyflink_events_per_s"] / parallelism,
            redis_shard_events_per_s=1e6 / features["redis_cpu_us_per_event"],
            scoring_pod_rows_per_s=scoring["service_rows_per_s_saturation"] / 2,
        )


def plan(load: float, costs: Costs, utilisation: float = 0.6) -> dict[str, Any]:
    """How many of each part ``load`` events/s takes, each at most ``utilisation`` busy."""
    need = {
        "taskmanager_slots": math.ceil(load / (costs.slot_events_per_s * utilisation)),
        "redis_shards": math.ceil(load / (costs.redis_shard_events_per_s * utilisation)),
        "scoring_pods": math.ceil(load / (costs.scoring_pod_rows_per_s * utilisation)),
    }
    return {
        "load_per_s": load,
        **need,
        "kafka_partitions": need["taskmanager_slots"] * PARTITIONS_PER_SLOT,
        "cores": sum(need.values()),
        "first_bottleneck": max(need, key=lambda part: need[part]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("e2e", "features", "scoring"):
        parser.add_argument(f"--{name}", type=Path, required=True,
                            help=f"the JSON printed by benchmarks.{name}")  # fmt: skip
    parser.add_argument("--parallelism", type=int, default=2, help="the e2e run's job")
    parser.add_argument("--load", type=float, nargs="+", default=list(LOADS))
    parser.add_argument("--utilisation", type=float, default=0.6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    e2e, features, scoring = (json.loads(p.read_text().strip().splitlines()[-1])
                              for p in (args.e2e, args.features, args.scoring))  # fmt: skip
    costs = Costs.of(e2e, features, scoring, args.parallelism)
    result = {"benchmark": "capacity", "per_core": dataclasses.asdict(costs),
              "utilisation": args.utilisation,
              "plans": [plan(load, costs, args.utilisation) for load in args.load]}  # fmt: skip
    if not args.json:
        for row in result["plans"]:
            print(" ".join(f"{k}={v}" for k, v in row.items()))
    print(json.dumps(result | provenance()))


if __name__ == "__main__":
    main()
