"""Consumer lag, one probe for every reader: the partition's end offset minus the next offset
the reader will process, asked of the broker by a thread so readers never wait for it.

Readers report what they processed; the probe knows nothing of how they consume (Flink, a
librdkafka thread, faust agents), so all of them report lag the same way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.core.kafka_config import librdkafka
from services.core.settings import Settings

Partition = tuple[str, int]
LagReport = Callable[[Mapping[Partition, int]], None]


def lag_of(
    next_offsets: Mapping[Partition, int], ends: Mapping[Partition, int]
) -> dict[Partition, int]:
    """Messages behind the end per partition (never negative; unknown ends left out)."""
    return {tp: max(ends[tp] - nxt, 0) for tp, nxt in next_offsets.items() if tp in ends}


def per_topic(lag: Mapping[Partition, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (topic, _), behind in lag.items():
        out[topic] = out.get(topic, 0) + behind
    return out


class LagProbe:
    """Every ``interval_s``, ``report`` gets the lag of each partition a reader processed."""

    def __init__(self, settings: Settings, report: LagReport, interval_s: float = 2.0) -> None:
        self._consumer = Consumer(librdkafka(settings.kafka) | {"group.id": "fraudstream-lag"})
        self._report, self._interval = report, interval_s
        self._next: dict[Partition, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)
        self._thread.start()

    def processed(self, offsets: Iterable[tuple[str, int, int]]) -> None:
        """Record (topic, partition, offset) triples the reader has processed."""
        with self._lock:
            for topic, partition, offset in offsets:
                if offset + 1 > self._next.get((topic, partition), -1):
                    self._next[(topic, partition)] = offset + 1

    def _ends(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        ends: dict[Partition, int] = {}
        for topic, partition in partitions:
            with contextlib.suppress(KafkaException):
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=1.0
                )
                ends[(topic, partition)] = high
        return ends

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                known = dict(self._next)
            if known:
                self._report(lag_of(known, self._ends(known)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
