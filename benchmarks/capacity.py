"""A capacity plan from measured per-core costs: for a load in transactions/s, how many
TaskManager slots, Kafka partitions, Redis Cluster shards, scoring pods and broker cores it
takes, and which part runs out first.

The costs are the CPU each process of the PyFlink pipeline spent per event while it decided
``benchmarks.e2e``'s backlog (``pyflink.cpu_us_per_event``), so the plan follows the code:

- a slot is one core for one subtask: its Python worker and its share of the TaskManager's
  JVM (``python_workers`` + ``flink_jvm``);
- a Redis shard is one core (Redis runs commands on one thread): ``redis``;
- a scoring pod is one core (one worker): ``scoring``;
- the broker: ``broker`` (the embedded one's, or Apache Kafka's with ``--broker kafka``);
- partitions: two per slot (a slot reads whole partitions; two leave room to add slots
  without re-partitioning, which would move cards between partitions).

Each part is planned at ``--utilisation`` (0.6: headroom for bursts and a lost node). The
first bottleneck is the part that needs the most cores: the one to make cheaper first.

    python -m benchmarks.capacity --e2e E2E.json [E2E.json ...] [--load 1000 10000 13236]
        [--utilisation 0.6] [--json]

Given several runs, each part's cost is its median over them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.provenance import provenance

LOADS = (1_000, 10_000, 13_236)  # 13,236: VisaNet's stated peak, transactions per second
PARTITIONS_PER_SLOT = 2


@dataclass(frozen=True)
class Costs:
    """CPU microseconds per event of each part."""

    slot: float
    redis: float
    scoring: float
    broker: float

    @classmethod
    def of(cls, cpu_us_per_event: dict[str, float]) -> Costs:
        """From ``benchmarks.e2e``'s ``pyflink.cpu_us_per_event``."""
        cpu = {part: cpu_us_per_event.get(part, 0.0) for part in
               ("python_workers", "flink_jvm", "redis", "scoring", "broker")}  # fmt: skip
        return cls(cpu["python_workers"] + cpu["flink_jvm"], cpu["redis"], cpu["scoring"],
                   cpu["broker"])  # fmt: skip

    @classmethod
    def median(cls, runs: list[Costs]) -> Costs:
        """Each part's median over several runs (this machine's speed varies between runs)."""
        return cls(*(statistics.median(getattr(run, f.name) for run in runs)
                     for f in dataclasses.fields(cls)))  # fmt: skip


def plan(load: float, costs: Costs, utilisation: float = 0.6) -> dict[str, Any]:
    """How many of each part ``load`` events/s takes, each core at most ``utilisation`` busy."""

    busy = {  # cores' worth of work
        "taskmanager_slots": load * costs.slot / 1e6,
        "redis_shards": load * costs.redis / 1e6,
        "scoring_pods": load * costs.scoring / 1e6,
        "broker_cores": load * costs.broker / 1e6,
    }
    need = {part: max(1, math.ceil(work / utilisation)) for part, work in busy.items()}
    return {
        "load_per_s": load,
        **need,
        "kafka_partitions": need["taskmanager_slots"] * PARTITIONS_PER_SLOT,
        "cores": sum(need.values()),
        "first_bottleneck": max(busy, key=lambda part: busy[part]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e", type=Path, nargs="+", required=True,
                        help="the JSON benchmarks.e2e printed, one file per run")  # fmt: skip
    parser.add_argument("--load", type=float, nargs="+", default=list(LOADS))
    parser.add_argument("--utilisation", type=float, default=0.6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [json.loads(p.read_text().strip().splitlines()[-1]) for p in args.e2e]
    costs = Costs.median([Costs.of(run["pyflink"]["cpu_us_per_event"]) for run in runs])
    result = {"benchmark": "capacity", "broker": runs[0].get("broker"), "runs": len(runs),
              "cpu_us_per_event": dataclasses.asdict(costs), "utilisation": args.utilisation,
              "plans": [plan(load, costs, args.utilisation) for load in args.load]}  # fmt: skip
    if not args.json:
        for row in result["plans"]:
            print(" ".join(f"{k}={v}" for k, v in row.items()))
    print(json.dumps(result | provenance()))


if __name__ == "__main__":
    main()
