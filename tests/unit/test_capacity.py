"""The capacity plan's arithmetic, on figures worked by hand."""

from __future__ import annotations

import pytest

from benchmarks.capacity import Costs, plan


def test_a_plan_sizes_each_part_at_the_utilisation_and_names_the_largest() -> None:
    costs = Costs.of({"pyflink_events_per_s": 6_000}, {"redis_cpu_us_per_event": 30.0},
                     {"service_rows_per_s_saturation": 100_000}, parallelism=2)  # fmt: skip
    assert costs.slot_events_per_s == 3_000
    assert costs.redis_shard_events_per_s == pytest.approx(33_333.33, abs=0.01)
    assert costs.scoring_pod_rows_per_s == 50_000
    # 10,000/s at 0.6: slots 10,000 / 1,800 = 5.6 -> 6; Redis 10,000 / 20,000 -> 1;
    # scoring 10,000 / 30,000 -> 1; two partitions per slot.
    assert plan(10_000, costs, 0.6) == {
        "load_per_s": 10_000, "taskmanager_slots": 6, "redis_shards": 1, "scoring_pods": 1,
        "kafka_partitions": 12, "cores": 8, "first_bottleneck": "taskmanager_slots",
    }  # fmt: skip
    # Redis three times dearer: at 13,236/s it needs 13,236 / 6,667 = 1.99 -> 2 shards; a
    # Redis dearer than the worker becomes the bottleneck.
    dear = Costs(3_000, 1e6 / 90, 50_000)
    assert plan(13_236, dear, 0.6)["redis_shards"] == 2
    assert plan(13_236, Costs(3_000, 1_000, 50_000), 0.6)["first_bottleneck"] == "redis_shards"
