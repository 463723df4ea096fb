"""The capacity plan's arithmetic, on figures worked by hand."""

from __future__ import annotations

from benchmarks.capacity import Costs, plan


def test_a_plan_sizes_each_part_at_the_utilisation_and_names_the_largest() -> None:
    costs = Costs.of({"python_workers": 200.0, "flink_jvm": 80.0, "redis": 40.0,
                      "scoring": 12.0, "broker": 75.0, "this_benchmark": 70.0})  # fmt: skip
    assert costs == Costs(slot=280.0, redis=40.0, scoring=12.0, broker=75.0)
    # 10,000/s at 0.6: slots 10,000 x 280 us = 2.8 cores / 0.6 = 4.7 -> 5; Redis 0.4 / 0.6
    # -> 1; scoring 0.12 / 0.6 -> 1; broker 0.75 / 0.6 = 1.25 -> 2; two partitions a slot.
    assert plan(10_000, costs, 0.6) == {
        "load_per_s": 10_000, "taskmanager_slots": 5, "redis_shards": 1, "scoring_pods": 1,
        "broker_cores": 2, "kafka_partitions": 10, "cores": 9,
        "first_bottleneck": "taskmanager_slots",
    }  # fmt: skip
    # 13,236/s: Redis 13,236 x 40 us = 0.53 / 0.6 -> 1; at 100 us a shard, 1.32 / 0.6 -> 3.
    assert plan(13_236, costs, 0.6)["redis_shards"] == 1
    dear = Costs(slot=280.0, redis=1_000.0, scoring=12.0, broker=75.0)
    assert plan(13_236, Costs(280.0, 100.0, 12.0, 75.0), 0.6)["redis_shards"] == 3
    assert plan(13_236, dear, 0.6)["first_bottleneck"] == "redis_shards"


def test_several_runs_give_each_part_its_median() -> None:
    runs = [Costs(300.0, 40.0, 10.0, 70.0), Costs(250.0, 50.0, 12.0, 60.0),
            Costs(270.0, 30.0, 11.0, 90.0)]  # fmt: skip
    assert Costs.median(runs) == Costs(slot=270.0, redis=40.0, scoring=11.0, broker=70.0)
