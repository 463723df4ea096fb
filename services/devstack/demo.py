"""``fraudstream demo``: the embedded stack and the stream job, fed by the generator at a
chosen rate, watched live, and summed up against the generator's labels at the end.

With the feedback app in the stack, the demo is also the analyst: it labels each alert with
the generator's truth, so a confirmed card's later transactions are declined by the
blocklist while the demo runs (the workbench shows those cases closed by ``demo``). Without
its analyst, the alerts wait in the workbench's queue."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec
import numpy as np

from services.clients.feedback import FeedbackProducer
from services.clients.producer import TransactionProducer
from services.core.contract import Alert, DeadLetter, Decision, Label
from services.core.kafka import assigned_consumer
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import ProcessRecord, free_loopback_port
from services.devstack.stack import StackError
from services.generator import GeneratorConfig, generate, start_ending_now

JOB_READY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 120.0
WARMUP_PREFIX = "demo-warmup-"
_decision = msgspec.json.Decoder(Decision).decode
_alert = msgspec.json.Decoder(Alert).decode
_dead_letter = msgspec.json.Decoder(DeadLetter).decode


@dataclass(frozen=True)
class DemoConfig:
    rate: int
    duration_s: float
    seed: int
    fraud_rate: float = 0.01
    invalid_rate: float = 0.002  # a few malformed messages, to show the dead-letter path
    analyst: bool = True  # label every alert; False: leave them to the workbench's analysts


@dataclass
class Progress:
    """What the live view shows; updated by the consumer thread, read by the view."""

    started: float = field(default_factory=time.monotonic)
    produced: int = 0
    invalid_sent: int = 0
    decisions: int = 0
    alerts: int = 0
    dlq: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    degraded: int = 0
    dispositions: int = 0
    blocklisted: int = 0  # declined by a blocklist rule, i.e. because of an analyst's label
    latencies_ms: list[float] = field(default_factory=list)
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=100_000))
    latest_alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=8))

    def events_per_s(self, window_s: float = 2.0) -> float:
        now = time.monotonic()
        return sum(1 for t, _ in self.recent if now - t <= window_s) / window_s

    def percentile_ms(self, q: float, window_s: float | None = None) -> float:
        now = time.monotonic()
        values = (
            [ms for t, ms in self.recent if now - t <= window_s] if window_s else self.latencies_ms
        )
        return float(np.percentile(values, q)) if values else 0.0


class _Analyst:
    """Labels each alert with the generator's truth, as an analyst team would."""

    def __init__(self, settings: Settings, fraud: set[str]) -> None:
        self._producer, self._fraud = FeedbackProducer(settings), fraud

    def label(self, alert: Alert) -> None:
        label: Label = "fraud" if alert.transaction_id in self._fraud else "legit"
        self._producer.send(alert.transaction_id, label, analyst="demo")

    def close(self) -> None:
        self._producer.close(10)


class _Watcher:
    """Reads decisions, alerts and dead letters of this run in a background thread."""

    def __init__(
        self, settings: Settings, progress: Progress, ids: set[str], seed: int,
        analyst: _Analyst | None,
    ) -> None:  # fmt: skip
        self._settings, self._progress, self._ids, self._seed = settings, progress, ids, seed
        self._analyst = analyst
        self._decided: set[str] = set()
        self.alerted: set[str] = set()
        self.job_answered = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)
        self._thread.start()

    @property
    def decided(self) -> int:
        return len(self._decided)

    def _run(self) -> None:
        s = self._settings
        topics = [s.topic.decisions, s.topic.alerts, s.topic.dlq]
        consumer = assigned_consumer(s, topics, group="fraudstream-demo")
        try:
            while not self._stop.is_set():
                for message in consumer.consume(5_000, timeout=0.2):
                    if not message.error():
                        self._take(message.topic() or "", message.value() or b"")
        finally:
            consumer.close()

    def _take(self, topic: str, value: bytes) -> None:
        p, s = self._progress, self._settings
        if topic == s.topic.decisions:
            d = _decision(value)
            if d.transaction_id.startswith(f"{WARMUP_PREFIX}{self._seed}-"):
                self.job_answered.set()
            if d.transaction_id not in self._ids or d.transaction_id in self._decided:
                return  # another run's, or a repeat after a restart
            self._decided.add(d.transaction_id)
            p.decisions += 1
            p.outcomes[d.decision] += 1
            p.degraded += bool(d.degraded)
            p.blocklisted += any(r.startswith("rule:blocklist") for r in d.reasons)
            p.latencies_ms.append(d.latency_ms)
            p.recent.append((time.monotonic(), d.latency_ms))
        elif topic == s.topic.alerts:
            a = _alert(value)
            if a.transaction_id in self._ids and a.transaction_id not in self.alerted:
                self.alerted.add(a.transaction_id)
                p.alerts += 1
                p.latest_alerts.append(a)
                if self._analyst is not None:
                    self._analyst.label(a)
                    p.dispositions += 1
        elif _dead_letter(value).raw == _broken(self._seed):
            p.dlq += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _broken(seed: int) -> bytes:
    """This run's malformed message (the DLQ keeps its bytes, so the run can count its own)."""
    return b'{"transaction_id": "broken-%d", "amount": -1}' % seed


def _wait_for_job(settings: Settings, watcher: _Watcher, job: ProcessRecord, seed: int) -> None:
    """Send a marked warm-up transaction every 2 s until the job decides one (end to end)."""
    template = next(generate(GeneratorConfig(seed=0), 1)).transaction
    deadline = time.monotonic() + JOB_READY_TIMEOUT_S
    with TransactionProducer(settings) as producer:
        while not watcher.job_answered.wait(2.0):
            if not processes.is_running(job):
                raise StackError(f"the stream job exited at start; its log: {job.log}")
            if time.monotonic() > deadline:
                raise processes.WaitTimeout(
                    f"the stream job decided nothing in {JOB_READY_TIMEOUT_S:.0f} s"
                )
            warmup = msgspec.structs.replace(
                template, transaction_id=f"{WARMUP_PREFIX}{seed}-{uuid.uuid4()}",
                event_time=int(time.time() * 1000),
            )  # fmt: skip
            producer.send(warmup)
            producer.flush(5)


def _stream(settings: Settings, config: DemoConfig, progress: Progress, ids: set[str],
            fraud: set[str]) -> None:  # fmt: skip
    """Publish generated events at ``rate`` for ``duration`` (and a few malformed ones)."""
    rng = random.Random(config.seed)
    total = int(config.rate * config.duration_s)
    generator = GeneratorConfig(seed=config.seed, fraud_rate=config.fraud_rate)
    start = start_ending_now(generator, total, int(time.time() * 1000))
    generator = dataclasses.replace(generator, start_ms=start)
    started = time.monotonic()
    with TransactionProducer(settings) as producer:
        for n, item in enumerate(generate(generator, total), start=1):
            ids.add(item.transaction.transaction_id)
            if item.is_fraud:
                fraud.add(item.transaction.transaction_id)
            producer.send(item.transaction)
            progress.produced = n
            if rng.random() < config.invalid_rate:
                producer.send_raw(b"demo", _broken(config.seed))
                progress.invalid_sent += 1
            ahead = n / config.rate - (time.monotonic() - started)
            if ahead > 0.005:
                time.sleep(ahead)


def run(
    settings: Settings, config: DemoConfig, view: Callable[[Progress], None]
) -> dict[str, float | int | str]:
    """Start what is missing, stream, watch, stop the job; the summary as a flat dict."""
    state = stack.up(settings)
    local = stack.client_settings(settings, state)
    if state.prometheus_url is None:  # nobody scrapes it: any free port
        local = local.updated({"job_metrics_port": free_loopback_port()})
    progress, ids, fraud = Progress(), set[str](), set[str]()
    feedback_app = any(p.name == "feedback-app" and processes.is_running(p)
                       for p in state.processes)  # fmt: skip
    analyst = _Analyst(local, fraud) if feedback_app and config.analyst else None
    job = stack.start_job(local, settings.state_dir / "logs", "demo-job")
    try:
        watcher = _Watcher(local, progress, ids, config.seed, analyst)
        _wait_for_job(local, watcher, job, config.seed)
        progress.started = time.monotonic()
        producer = threading.Thread(target=_stream, args=(local, config, progress, ids, fraud))
        producer.start()
        with _ticking(lambda: view(progress)):
            producer.join()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while watcher.decided < len(ids) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # the alerts of the last decisions are produced in the same batch
        watcher.close()
    finally:
        processes.stop(job)
        if analyst is not None:
            analyst.close()
    workbench = {"workbench": state.workbench_url} if state.workbench_url else {}
    return _summary(progress, ids, fraud, watcher.alerted) | workbench


@contextlib.contextmanager
def _ticking(tick: Callable[[], None], every_s: float = 0.5) -> Iterator[None]:
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            tick()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        tick()


def _summary(
    progress: Progress, ids: set[str], fraud: set[str], alerted: set[str]
) -> dict[str, float | int | str]:
    caught = len(alerted & fraud)
    return {
        "produced": len(ids),
        "decisions": progress.decisions,
        "missing": len(ids) - progress.decisions,
        "alerts": progress.alerts,
        "dlq": progress.dlq,
        "invalid_sent": progress.invalid_sent,
        "review": progress.outcomes["review"],
        "decline": progress.outcomes["decline"],
        "degraded": progress.degraded,
        "dispositions": progress.dispositions,
        "blocklisted": progress.blocklisted,
        "fraud": len(fraud),
        "p50_ms": round(progress.percentile_ms(50), 2),
        "p99_ms": round(progress.percentile_ms(99), 2),
        "max_ms": round(max(progress.latencies_ms, default=0.0), 2),
        "precision": round(caught / len(alerted), 4) if alerted else 0.0,
        "recall": round(caught / len(fraud), 4) if fraud else 0.0,
        "seconds": round(time.monotonic() - progress.started, 2),
    }
