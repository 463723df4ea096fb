"""Helpers for stream-job tests: a stack per test, the job as a process, a decisions tail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from services.core.contract import Decision
from services.core.kafka import assigned_consumer
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import ProcessRecord, free_loopback_port

_decision = msgspec.json.Decoder(Decision).decode


BROKERS = ["tansu", "kafka"]  # the embedded default and Apache Kafka (KRaft, from Maven)


@contextmanager
def running_stack(
    state_dir: Path, broker: str = "tansu", redis_cluster: bool = False, **more: object
) -> Iterator[Settings]:
    """Broker, Redis (or a Redis Cluster) and scoring service for one test; the job's
    settings pointing at them. ``more``: further settings, by flat name."""
    base = Settings.of(state_dir=state_dir, stack_broker=broker, stack_redis_cluster=redis_cluster,
                       **more)  # fmt: skip
    state = stack.up(base, feedback=False, workbench=False)  # tests start their own
    try:
        yield stack.client_settings(base, state).updated({
            "job_metrics_port": free_loopback_port(), "job_scoring_deadline_ms": 200,
            "job_from_beginning": True,  # tests produce while the new job is starting
        })  # fmt: skip
    finally:
        stack.down(base)


def kill_hard(record: ProcessRecord) -> None:
    """SIGKILL the job's whole process group (driver, JVM, Python workers): a crash."""
    os.killpg(record.pid, signal.SIGKILL)
    processes.wait_until(lambda: not processes.is_running(record), 10, "job killed")


def produce(settings: Settings, count: int, rate: int, seed: int, start: str, *more: str) -> None:
    """Generated transactions through the real CLI (labels beside, in the state dir)."""
    env = settings.child_environment()
    argv = [sys.executable, "-m", "services.cli", "produce", "--count", str(count), "--rate",
            str(rate), "--seed", str(seed), "--start", start, "--json", *more]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr


class DecisionTail:
    """Reads ``decisions`` from the beginning, keeping every decision (repeats too)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = assigned_consumer(settings, [settings.topic.decisions], group="test-tail")
        self.decisions: list[Decision] = []

    def poll(self) -> None:
        for message in self._consumer.consume(10_000, timeout=0.2):
            if not message.error():
                self.decisions.append(_decision(message.value() or b""))

    def wait_for(self, count: int, timeout: float, what: str = "") -> list[Decision]:
        deadline = time.monotonic() + timeout
        while len({d.transaction_id for d in self.decisions}) < count:
            if time.monotonic() > deadline:
                seen = len({d.transaction_id for d in self.decisions})
                raise TimeoutError(f"{what}: {seen} of {count} decisions within {timeout} s")
            self.poll()
        return self.decisions

    def close(self) -> None:
        self._consumer.close()


def job_metric(settings: Settings, prefix: str) -> float:
    """The sum of a metric's series over the job's workers (one metrics port each)."""
    total = 0.0
    first = settings.job.metrics_port
    for port in range(first, first + settings.job.parallelism + 2):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            continue
        total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith(prefix))  # fmt: skip
    return total
