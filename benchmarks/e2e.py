"""End to end: the PyFlink job against a pure-Python baseline doing the same work.

The baseline is one process: confluent-kafka consume, the same ``Decider`` (the shared online
features with pipelined Redis, the same rules), ONNX Runtime in process instead of the
service, produce. Both run on the same embedded broker and Redis, on their own topics.

- warm-up: a backlog of ``--warmup`` events, not measured (the JVM's JIT compiler takes a
  core for the job's first tens of seconds; a job runs for days);
- throughput: a backlog of ``--count`` events, each pipeline alone on the machine; events/s
  between the first and the last decision;
- latency: open-loop rates (1k, 2k, 5k events/s) for ``--seconds`` each: p50/p99 from the
  producer's send (the record's Kafka timestamp) to the decision, the p99 from the pipeline's
  own read of the record (``latency_ms``), and whether the pipeline kept up (every event
  decided within 10 s of the last one sent, so lag did not grow).

At each rate, where the time goes (``stages``): ``source_ms``, the producer's send to the
pipeline's read of the record (broker, Kafka source); ``pipeline_ms``, the read to the decision
(Flink's hand-over to Python and the micro-batch's wait, then deciding it); ``sink_ms``, the
decision to this benchmark's consumer receiving it (sink, broker, consumer); and per batch,
from the workers' own histograms, ``batch_ms`` (deciding it), ``redis_ms``, ``scoring_ms``.

With ``--cluster``, the same job submitted to a standalone Flink cluster (a JobManager and two
TaskManagers of one slot each, on this machine) is measured the same way, after the baseline.
``--delivery at-least-once`` on Kafka measures the job writing at once rather than in a
transaction per checkpoint (exactly-once, Kafka's default): what ``sink_ms`` costs the guarantee.

    python -m benchmarks.e2e [--json] [--broker tansu|kafka] [--delivery exactly-once|
        at-least-once] [--cluster] [--warmup 40000] [--count 40000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, get_args

import msgspec
import numpy as np
import prometheus_client
import redis
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Producer

from benchmarks import stages
from benchmarks.cleanup import stop_on_signals
from benchmarks.provenance import provenance
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.clients.produce import KafkaSink, generated_items, run
from services.clients.reading import transaction_id
from services.core import kafka
from services.core.contract import Decision
from services.core.exposition import serve_metrics
from services.core.kafka_config import librdkafka
from services.core.settings import JobSettings, Settings
from services.devstack import flink_cluster, processes, stack
from services.generator import GeneratorConfig, start_ending_now
from services.scoring.server.inprocess import InProcessScorer
from stream_jobs.decide import DecideOptions, Decider, Record
from stream_jobs.metrics import JobMetrics
from stream_jobs.strategy_feed import StrategyFeed

RATES = (1_000, 2_000, 5_000)
_decision = msgspec.json.Decoder(Decision).decode


def _own_topics(settings: Settings, name: str) -> Settings:
    """A pipeline's own topics and consumer group, created; Redis emptied for it."""
    own = settings.updated({
        "topic_transactions": f"{name}.transactions", "topic_decisions": f"{name}.decisions",
        "topic_alerts": f"{name}.alerts", "topic_dlq": f"{name}.dlq",
        "topic_feedback": f"{name}.feedback", "job_group_id": f"fraudstream-{name}",
    })  # fmt: skip
    kafka.create_topics(own)
    redis.Redis.from_url(settings.redis.require_url()).flushdb()
    return own


def _on_cluster(settings: Settings, directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same job submitted to a standalone Flink cluster, two TaskManagers of one slot."""
    remote = _own_topics(settings, "cluster")
    cluster = flink_cluster.start(directory, taskmanagers=2)
    try:

        def submit(_end: bool) -> flink_cluster.Cluster:
            argv = [sys.executable, "-m", "services.cli", "job", "submit", "--jobmanager",
                    cluster.jobmanager, "--parallelism", str(remote.job.parallelism)]  # fmt: skip
            subprocess.run(argv, env=remote.child_environment(), capture_output=True,
                           timeout=240, check=True)  # fmt: skip
            return cluster

        return _measure(remote, submit, flink_cluster.cancel_jobs, args, 100)
    finally:
        flink_cluster.stop(cluster)


def baseline_worker(settings: Settings, from_end: bool, batch: int = 500) -> None:
    """The single-process pipeline: consume a batch, decide it, produce, repeat."""
    topic = settings.topic.transactions
    start = OFFSET_END if from_end else OFFSET_BEGINNING
    consumer = kafka.assigned_consumer(settings, [topic], start, "baseline")
    producer = Producer(librdkafka(settings.kafka) | {"linger.ms": 1})
    registry = Registry(DEFAULT_REGISTRY)
    version = registry.current()
    assert version is not None
    scorer = InProcessScorer(registry.path(version))
    options = DecideOptions.of(settings)
    metrics = JobMetrics(prometheus_client.CollectorRegistry())
    serve_metrics(metrics.registry, "127.0.0.1", settings.job.metrics_port or 0)
    feed = StrategyFeed(settings, options.signals)
    feed.start()
    decider = Decider(redis.Redis.from_url(settings.redis.require_url()), scorer, options,
                      metrics, versions=lambda: feed.versions)  # fmt: skip
    while True:
        messages = [m for m in consumer.consume(batch, timeout=0.01) if not m.error()]
        if not messages:
            continue
        read = _now_ms()
        records = [Record(m.key(), m.value() or b"", m.partition() or 0, m.offset() or 0,
                          read, m.timestamp()[1]) for m in messages]  # fmt: skip
        for out in decider.decide(records):
            if out.decision is not None:
                producer.produce(settings.topic.decisions, out.decision, out.key)
            if out.alert is not None:
                producer.produce(settings.topic.alerts, out.alert, out.key)
            if out.dead_letter is not None:
                producer.produce(settings.topic.dlq, out.dead_letter, out.key)
        producer.poll(0)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class Collector:
    """Decisions of one pipeline from the beginning, kept per transaction id (the first), when
    each transaction was sent (its Kafka timestamp, set by this benchmark's producer) and when
    its decision reached this consumer: read all along by a thread, as a real consumer would,
    so that the receipt times are true while the benchmark sends."""

    def __init__(self, settings: Settings) -> None:
        topics = [settings.topic.decisions, settings.topic.transactions]
        self._consumer = kafka.assigned_consumer(settings, topics, group="bench")
        self._decisions = settings.topic.decisions
        self.by_id: dict[str, Decision] = {}
        self.sent_ms: dict[str, int] = {}
        self.received_ms: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="collector", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                self._read_some()
        except BaseException as error:  # reported by wait(), not lost with the thread
            self._failed = error

    def _read_some(self) -> None:
        first = self._consumer.poll(0.05)  # returns at the first message: receipt is timely
        if first is not None:
            received = _now_ms()  # small batches: a late one does not date many messages
            self._keep(received, [first, *self._consumer.consume(500, timeout=0)])

    def _keep(self, received: int, messages: list[Any]) -> None:
        with self._lock:
            for m in messages:
                if m.error():
                    continue
                if m.topic() == self._decisions:
                    d = _decision(m.value() or b"")
                    if d.transaction_id not in self.by_id:
                        self.by_id[d.transaction_id] = d
                        self.received_ms[d.transaction_id] = received
                elif (tx := transaction_id(m.value() or b"")) is not None:
                    self.sent_ms[tx] = m.timestamp()[1]

    def wait(self, ids: set[str], timeout: float) -> list[Decision]:
        """The decisions of ``ids``, once all are in or at the deadline (those in by then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._failed is not None:
                raise RuntimeError("the collector stopped reading") from self._failed
            with self._lock:
                if ids <= self.by_id.keys():
                    break
            time.sleep(0.05)
        with self._lock:
            return [self.by_id[i] for i in ids if i in self.by_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def end_to_end_ms(self, decisions: list[Decision]) -> list[float]:
        """Sent (by the producer) to decided, per decision: what a payment waits."""
        return [float(d.decided_at - self.sent_ms[d.transaction_id]) for d in decisions
                if d.transaction_id in self.sent_ms]  # fmt: skip

    def stages(self, decisions: list[Decision]) -> dict[str, Any]:
        """Sent to read, read to decided, decided to received: p50/p99 of each."""
        sent = [d for d in decisions if d.transaction_id in self.sent_ms]
        source = [d.decided_at - d.latency_ms - self.sent_ms[d.transaction_id] for d in sent]
        sink = [float(self.received_ms[d.transaction_id] - d.decided_at) for d in decisions]
        return {"source_ms": _both(source), "pipeline_ms": _both([d.latency_ms for d in decisions]),
                "sink_ms": _both(sink)}  # fmt: skip


def _both(values: list[float]) -> dict[str, float | None]:
    return {"p50_ms": _percentile(values, 50), "p99_ms": _percentile(values, 99)}


def _items(count: int, seed: int) -> list[Any]:
    """``count`` generated events ending now: none refused as future-dated."""
    config = GeneratorConfig(seed=seed)
    config = dataclasses.replace(config, start_ms=start_ending_now(config, count, _now_ms()))
    return list(generated_items(config, count))


def _send(sink: KafkaSink, items: list[Any], rate: int) -> set[str]:
    run(items, sink, rate=rate, labels=None)
    return {item.transaction.transaction_id for item in items}


def _measure(settings: Settings, start: Any, stop: Any, args: argparse.Namespace,
             seed: int) -> dict[str, Any]:  # fmt: skip
    """Warm-up, throughput on a backlog, then latency at each fixed rate, for one pipeline
    (its workers serving their metrics from ``job_metrics_port``)."""
    collector = Collector(settings)
    metrics_port = settings.job.metrics_port or 0
    sink = KafkaSink(settings, None)  # one producer: its start-up (~0.5 s on Tansu) is not timed
    warmup = _send(sink, _items(args.warmup, seed), 0)
    handle = None
    try:
        handle = start(False)
        received = len(collector.wait(warmup, 600))
        if received < len(warmup):  # on Tansu a tailing reader may skip a batch for good
            raise RuntimeError(
                f"{len(warmup) - received} of {len(warmup)} warm-up decisions "
                "not received within 600 s (see docs/stream-job.md on Tansu)"
            )
        backlog = _items(args.count, seed + 1)  # generated before the CPU is counted
        before = stages.cpu_seconds()
        ids = _send(sink, backlog, 0)
        got = collector.wait(ids, 600)
        cpu = stages.cpu_since(before)
        decided_at = sorted(d.decided_at for d in got)
        span_s = max((decided_at[-1] - decided_at[0]) / 1000, 1e-3)
        result: dict[str, Any] = {
            "events_per_s": round(len(got) / span_s, 1), "backlog_decided": len(got),
            # CPU per event of each process while the backlog was decided
            "cpu_us_per_event": {part: round(s / max(len(got), 1) * 1e6, 1)
                                 for part, s in sorted(cpu.items())},
        }  # fmt: skip
        for i, rate in enumerate(RATES):
            counted = stages.snapshot(metrics_port)
            ids = _send(sink, _items(int(rate * args.seconds), seed + 2 + i), rate)
            got = collector.wait(ids, 10)
            per_batch = stages.breakdown(counted, stages.snapshot(metrics_port))
            latencies, in_job = collector.end_to_end_ms(got), [d.latency_ms for d in got]
            result[f"rate_{rate}"] = {
                "decided": len(got), "sent": len(ids), "kept_up": len(got) == len(ids),
                "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
                "read_to_decision_p99_ms": _percentile(in_job, 99),
                "stages": collector.stages(got) | per_batch,
            }  # fmt: skip
    finally:
        if handle is not None:
            stop(handle)
        collector.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--warmup", type=int, default=40_000)
    parser.add_argument("--count", type=int, default=40_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu",
                        help="the local stack's broker: Tansu, or Apache Kafka")  # fmt: skip
    parser.add_argument("--cluster", action="store_true",
                        help="also the job on a Flink cluster of two TaskManagers")  # fmt: skip
    deliveries = get_args(JobSettings.model_fields["delivery"].annotation)
    parser.add_argument("--delivery", choices=deliveries,
                        help="the job's delivery on Kafka (default: FRAUDSTREAM_JOB_DELIVERY, "
                        "else exactly-once; Tansu's is always at-least-once)")  # fmt: skip
    args = parser.parse_args()
    if args.delivery == "exactly-once" and args.broker == "tansu":
        parser.error("Tansu has no exactly-once delivery (its read_committed readers stall)")
    stop_on_signals()
    with tempfile.TemporaryDirectory() as tmp:
        chosen = {"job_delivery": args.delivery} if args.delivery else {}
        base = Settings.of(state_dir=Path(tmp), stack_broker=args.broker, **chosen)
        state = stack.up(base, feedback=False, workbench=False)  # the job alone is measured
        settings = stack.client_settings(base, state).updated({
            "job_metrics_port": processes.free_loopback_port(),
            "job_from_beginning": True,  # the warm-up comes first
        })  # fmt: skip
        try:
            flink = _measure(
                settings,
                lambda _end: stack.start_job(settings, Path(tmp) / "logs"),
                processes.stop, args, 100,
            )  # fmt: skip
            other = _own_topics(settings, "baseline")
            context = multiprocessing.get_context("spawn")

            def start_baseline(from_end: bool) -> Any:
                worker = context.Process(
                    target=baseline_worker, args=(other, from_end), daemon=True
                )
                worker.start()
                return worker

            def stop_baseline(worker: Any) -> None:
                worker.terminate()
                worker.join(10)

            base_result = _measure(other, start_baseline, stop_baseline, args, 100)
            cluster = _on_cluster(settings, Path(tmp) / "flink", args) if args.cluster else None
        finally:
            stack.down(base)
    summary = {
        "benchmark": "e2e", "broker": args.broker, "delivery": settings.job.delivery,
        "pyflink": flink, "baseline": base_result,
        "pyflink_events_per_s": flink["events_per_s"],
        "baseline_events_per_s": base_result["events_per_s"],
        "ratio": round(flink["events_per_s"] / base_result["events_per_s"], 3),
        "p99_ms": {str(r): {"pyflink": flink[f"rate_{r}"]["p99_ms"],
                            "baseline": base_result[f"rate_{r}"]["p99_ms"]} for r in RATES},
    } | provenance()  # fmt: skip
    if cluster is not None:
        summary["pyflink_cluster"] = cluster
        summary["cluster_ratio_to_local"] = round(
            cluster["events_per_s"] / flink["events_per_s"], 3
        )
    if not args.json:
        print(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
