"""The online feature layer's cost per event and memory per card against card history length.

One process, one real Redis (started here on a loopback port), batches of 500. For each mean
card history (events in the card's last 30 days) a fresh Redis is filled by folding that
history through the real store, then timed on the next events of the same cards:

- ``us_per_event``: Redis plus Python (``OnlineFeatureStore.update``) per event;
- ``history_cost_ratio``: that cost at 1,000 events of history over the cost at 2;
- ``bytes_per_card``: Redis memory of every key divided by the cards (``MEMORY USAGE``), and
  apart from it ``replay_rows_bytes_per_card``, the rows kept within the replay horizon (the
  fill takes less than the horizon, so each card keeps its most);
- ``hostile``: p99 batch time of the other cards' batches while one card sends 10,000 events
  in 10 minutes within them, over the same batches with an ordinary card in its place;
- ``decider_events_per_s``: the whole Decider (decode, features, in-process ONNX, rules) on
  one core at a history of 64. Its fill counts the history on a job clock that follows the
  events (a batch's latest event time), as a live job would: a card keeps the replay rows of
  its last replay horizon only, about one, not its most (figures before 2026-12 carried 64
  rows a card); the timed events are counted on the wall clock. ``decider_wall_us_per_event``
  splits its time by the Decider's own histograms, and ``decider_alert_share`` says how
  many events raised an alert (those the model flagged are explained too);
- ``declared_entities``: the Decider's CPU per event on generated events with attributes
  (``produce --attributes``) with a signals file of 0, 4 and 12 declared entities, the cost
  each adds over none (``us_added_per_event``; goal at 4: 40 µs or less), and Redis bytes per
  entity value (its state, and the replay horizon's seen ids apart);
- ``memory``: Redis bytes per remembered alert (its context, against the whole alert kept
  before) and per counted transaction id in a card's seen-set, against two other layouts of
  the same ids (a hash of digest to day; a set per card and day).

Before each timed part the benchmark's own objects are frozen out of the garbage collector
(``gc.freeze``): the generated events it holds would otherwise make every collection slower
than in a stream job, which holds none.

    python -m benchmarks.features [--json] [--events N] [--fill N]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis
from prometheus_client import CollectorRegistry

from benchmarks.cleanup import stop_on_signals
from benchmarks.provenance import provenance
from benchmarks.stages import STAGES
from models.features.definitions import FEATURE_NAMES
from models.online import layout
from models.online.layout import AlertContext
from models.online.store import OnlineFeatureStore
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.core.contract import Alert, Transaction, encode
from services.core.signals import Signals
from services.devstack import processes
from services.devstack.stack import start_redis
from services.generator import GeneratorConfig, generate
from services.generator.signals import generated_signals
from services.scoring.server.inprocess import InProcessScorer
from services.scoring.wire import ScoreResponse
from stream_jobs.decide import DecideOptions, Decider, Record
from stream_jobs.metrics import JobMetrics

BATCH = 500
MONTH_MS = 30 * 86_400_000
START_MS = 1_772_323_200_000  # 2026-03-01, the history's first day
HISTORIES = (2, 10, 64, 100, 1_000)
MEMORY_HISTORIES = (10, 100, 1_000)
CITIES = [(40.7, -74.0), (51.5, -0.1), (48.9, 2.35), (35.7, 139.7), (-33.9, 151.2)]


def _cards_for(history: int, fill: int) -> int:
    """Enough cards that a batch spans many of them, few enough to fill quickly (``fill``
    events in all: 200,000 gives at least 200 cards at every history measured)."""
    return max(10, min(20_000, fill // history))


def _card_events(card: int, times: Sequence[int], rng: random.Random) -> Iterator[Transaction]:
    home = rng.choice(CITIES)
    for i, t in enumerate(times):
        yield Transaction(
            transaction_id=f"c{card}-{t}-{i}", event_time=t, card_id=f"c{card}",
            customer_id=f"u{card}", merchant_id=f"m{rng.randrange(3_000)}",
            merchant_category=rng.choice(["5411", "5812", "5541", "5999"]),
            amount=round(rng.lognormvariate(3.3, 0.8), 2), currency="USD",
            country="US" if rng.random() < 0.97 else "FR",
            channel=rng.choice(["card_present", "ecommerce"]),
            device_id=f"d{card}-{rng.randrange(2)}", lat=home[0], lon=home[1],
        )  # fmt: skip


def _stream(cards: int, per_card: int, start: int, span: int, seed: int) -> list[Transaction]:
    """``per_card`` events of each card spread over ``span`` ms after ``start``, by time."""
    rng = random.Random(seed)
    events: list[Transaction] = []
    for card in range(cards):
        times = sorted(start + rng.randrange(span) for _ in range(per_card))
        events += _card_events(card, times, rng)
    events.sort(key=lambda tx: tx.event_time_ms)
    return events


def _batches(events: Sequence[Transaction]) -> Iterator[Sequence[Transaction]]:
    for i in range(0, len(events), BATCH):
        yield events[i : i + BATCH]


def _memory_per_card(client: redis.Redis, cards: int) -> dict[str, int]:
    """Bytes per card: the replay rows (while within the horizon) and the seen-set apart from
    the rest."""
    total = {"bytes_per_card": 0, "replay_rows_bytes_per_card": 0, "seen_bytes_per_card": 0}
    for key in client.scan_iter(count=1_000):
        part = ("replay_rows_bytes_per_card" if key.endswith(b":recent") else
                "seen_bytes_per_card" if key.endswith(b":seen") else "bytes_per_card")  # fmt: skip
        total[part] += int(client.memory_usage(key, samples=0) or 0)
    return {part: round(n / cards) for part, n in total.items()}


def _bytes(client: redis.Redis, pattern: str) -> int:
    return sum(int(client.memory_usage(k, samples=0) or 0)
               for k in client.scan_iter(match=pattern, count=1_000))  # fmt: skip


def _memory(client: redis.Redis) -> dict[str, Any]:
    """Bytes per remembered alert, and per transaction id in three seen-set layouts."""
    client.flushdb()
    tx = next(iter(_stream(1, 1, START_MS, 1, seed=5)))
    alert = Alert(transaction_id=tx.transaction_id, card_id=tx.card_id,
                  event_time=tx.event_time_ms, decided_at=tx.event_time_ms, score=0.93,
                  decision="review", reasons=["rule:amount_limit", "model:amount_usd"],
                  model_version="v0001", transaction=tx,
                  features=dict.fromkeys(FEATURE_NAMES, 1234.5678))  # fmt: skip
    client.set("whole", encode(alert))
    client.set("context", AlertContext.of_alert(alert).encode())
    result: dict[str, Any] = {
        "alert_whole_bytes": int(client.memory_usage("whole", samples=0) or 0),
        "alert_context_bytes": int(client.memory_usage("context", samples=0) or 0),
    }
    for per_card in (10, 100, 1_000):  # ids in a card's 30 days
        client.flushdb()
        cards, rng = 100, random.Random(per_card)
        for card in range(cards):
            ids = [(f"c{card}-{i}", rng.randrange(30)) for i in range(per_card)]
            digests = [(layout.transaction_digest(t), day) for t, day in ids]
            client.zadd(f"zset:{card}", {d: day for d, day in digests})
            client.hset(f"hash:{card}", mapping={d: day for d, day in digests})
            for d, day in digests:
                client.sadd(f"set:{card}:{day}", d)
        ids_total = cards * per_card
        result[f"seen_bytes_per_id_at_{per_card}"] = {
            name: round(_bytes(client, f"{name}:*") / ids_total, 1)
            for name in ("zset", "hash", "set")
        }
    return result


def _fill(client: redis.Redis, store: OnlineFeatureStore, history: int, seed: int,
          fill: int, live: bool = False) -> int:  # fmt: skip
    """A fresh Redis holding ``history`` events of each card's last 30 days. ``live``: the
    job's clock follows the events, as in a live stream (a card keeps replay rows only for
    its last replay horizon); else every event counts now (each card keeps its most)."""
    client.flushdb()
    cards = _cards_for(history, fill)
    for batch in _batches(_stream(cards, history, START_MS, MONTH_MS, seed)):
        store.update(batch, now_ms=batch[-1].event_time_ms if live else None)
    return cards


def _next_events(cards: int, count: int, seed: int) -> list[Transaction]:
    """The cards' next events, within the hour after their history."""
    rng = random.Random(seed)
    per_card = max(1, count // cards)
    events = _stream(cards, per_card, START_MS + MONTH_MS, 3_600_000, seed)
    rng.shuffle(events)  # any card, any order within the hour: keep each card's own order
    events.sort(key=lambda tx: tx.event_time_ms)
    return events[:count]


def _cost(client: redis.Redis, store: OnlineFeatureStore, count: int,
          fill: int) -> dict[str, Any]:  # fmt: skip
    rows: dict[int, dict[str, Any]] = {}
    cost: dict[int, float] = {}
    for history in HISTORIES:
        cards = _fill(client, store, history, history, fill)
        memory = _memory_per_card(client, cards) if history in MEMORY_HISTORIES else {}
        events = _next_events(cards, count, seed=history + 1)
        _quiet_gc()
        started = time.perf_counter()
        for batch in _batches(events):
            store.update(batch)
        cost[history] = (time.perf_counter() - started) / len(events) * 1e6
        rows[history] = {"cards": cards, "us_per_event": round(cost[history], 1)} | memory
    return {"by_history": rows, "history_cost_ratio": round(cost[1_000] / cost[2], 3)}


def _quiet_gc() -> None:
    gc.collect()
    gc.freeze()


def _batch_p99(store: OnlineFeatureStore, batches: list[list[Transaction]]) -> float:
    _quiet_gc()
    times = []
    for batch in batches:
        started = time.perf_counter()
        store.update(batch)
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 99) * 1000)


def _hostile(client: redis.Redis, store: OnlineFeatureStore, fill: int) -> dict[str, Any]:
    """Batches of 450 ordinary events plus 50 of one card; that card is hostile (10,000
    events in 10 minutes, over 200 batches at the default fill) or ordinary (50 events per
    batch of many cards)."""
    results = {}
    count = max(5, fill // 1_000)  # batches
    for name in ("ordinary", "hostile"):
        cards = _fill(client, store, 64, 64, fill)
        others = _next_events(cards, 450 * count, seed=65)
        if name == "hostile":
            start = START_MS + MONTH_MS
            times = [start + i * 60 for i in range(50 * count)]  # one every 60 ms
            extra = list(_card_events(cards + 1, times, random.Random(9)))
        else:
            extra = _next_events(cards, 50 * count, seed=66)
        batches = [others[450 * i : 450 * (i + 1)] + extra[50 * i : 50 * (i + 1)]
                   for i in range(count)]  # fmt: skip
        results[name] = _batch_p99(store, [sorted(b, key=lambda t: t.event_time_ms)
                                           for b in batches])  # fmt: skip
    return {
        "p99_batch_ms_ordinary": round(results["ordinary"], 2),
        "p99_batch_ms_with_hostile_card": round(results["hostile"], 2),
        "hostile_p99_ratio": round(results["hostile"] / results["ordinary"], 3),
    }


def _decider(client: redis.Redis, store: OnlineFeatureStore, count: int,
            fill: int) -> dict[str, Any]:  # fmt: skip
    registry = Registry(DEFAULT_REGISTRY)
    scorer = InProcessScorer(registry.path(registry.current() or ""))
    cards = _fill(client, store, 64, 64, fill, live=True)
    events = _next_events(cards, count, seed=67)
    records = [Record(tx.card_id.encode(), encode(tx), 0, i, tx.event_time_ms)
               for i, tx in enumerate(events)]  # fmt: skip
    metrics = JobMetrics(CollectorRegistry())
    decider = Decider(client, scorer, metrics=metrics)
    _quiet_gc()
    redis_cpu = _redis_cpu_s(client)
    alerts = 0
    started = time.process_time(), time.perf_counter()
    for i in range(0, len(records), BATCH):
        alerts += sum(out.alert is not None for out in decider.decide(records[i : i + BATCH]))
    cpu, wall = time.process_time() - started[0], time.perf_counter() - started[1]
    redis_cpu = _redis_cpu_s(client) - redis_cpu
    return {
        "decider_events_per_s": round(len(records) / wall),
        "decider_events_per_cpu_s": round(len(records) / cpu),
        # per event, what a capacity plan needs: the worker's CPU and the Redis server's
        "decider_cpu_us_per_event": round(cpu / len(records) * 1e6, 1),
        "redis_cpu_us_per_event": round(redis_cpu / len(records) * 1e6, 1),
        "decider_alert_share": round(alerts / len(records), 3),
        "decider_wall_us_per_event": _parts(metrics.registry, len(records)),
    }


def _parts(registry: CollectorRegistry, events: int) -> dict[str, float]:
    """Where a decided event's wall time goes, from the Decider's own histograms: features
    (the lists' refresh, the fold in Python and both Redis round trips), scoring (the rows'
    matrix, in-process ONNX and reasons), and the rest of the batch (decoding, rules, lists,
    building and encoding the decision and alert)."""

    def total(stage: str) -> float:
        value = registry.get_sample_value(f"{STAGES[stage]}_sum")
        if value is None:
            raise RuntimeError(f"the Decider exported no {STAGES[stage]}")
        return value

    features, scoring = total("redis_ms"), total("scoring_ms")
    parts = {"features": features, "scoring": scoring,
             "rest": total("batch_ms") - features - scoring}  # fmt: skip
    return {name: round(seconds / events * 1e6, 1) for name, seconds in parts.items()}


def _redis_cpu_s(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used (its main thread and children, user + system)."""
    cpu = client.info("cpu")
    return float(sum(cpu[k] for k in ("used_cpu_sys", "used_cpu_user")))


EXTRA_ENTITIES = (
    ["ip"],
    ["merchant_id"],
    ["customer_id"],
    ["shipping_country"],
    ["billing_country"],
    ["entry_mode"],
    ["email_domain", "shipping_country"],
    ["device_id", "email_domain"],
)


def _with_entities(signals: Signals, count: int) -> Signals:
    """The generator's attributes with the first ``count`` of its entities and ours."""
    declared = [e.model_dump() for e in signals.entities] + [{"by": b} for b in EXTRA_ENTITIES]
    return Signals.model_validate({"attributes": signals.attributes,
                                   "entities": declared[:count]})  # fmt: skip


class _BuiltInScorer:
    """The shipped model on the built-in columns of longer rows: the same scoring cost
    whatever the signals, so that only the features' cost differs."""

    def __init__(self, scorer: InProcessScorer) -> None:
        self._scorer = scorer

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse:
        return self._scorer.score([row[: len(FEATURE_NAMES)] for row in rows])


def _entities(client: redis.Redis, count: int, warm: int) -> dict[str, Any]:
    """The Decider's CPU per event with 0, 4 and 12 declared entities, after a warm-up."""
    registry = Registry(DEFAULT_REGISTRY)
    scorer = _BuiltInScorer(InProcessScorer(registry.path(registry.current() or "")))
    config = GeneratorConfig(seed=5, customers=5_000, fraud_rate=0.01, start_ms=START_MS,
                             attributes=True)  # fmt: skip
    events = [item.transaction for item in generate(config, warm + count)]
    records = [Record(tx.card_id.encode(), encode(tx), 0, i, tx.event_time_ms)
               for i, tx in enumerate(events)]  # fmt: skip
    by_count: dict[str, Any] = {}
    for entities in (0, 4, 12):
        client.flushdb()
        signals = _with_entities(generated_signals(), entities)
        decider = Decider(client, scorer, DecideOptions(signals=signals))
        for i in range(0, warm, BATCH):  # a warm store: the entities' past in place
            decider.decide(records[i : i + BATCH])
        _quiet_gc()
        started = time.process_time()
        for i in range(warm, len(records), BATCH):
            decider.decide(records[i : i + BATCH])
        per_event = (time.process_time() - started) / count * 1e6
        states = [k for k in client.scan_iter(match="fs:v3:{e:*:state", count=1_000)]
        row: dict[str, Any] = {"us_per_event": round(per_event, 1), "entity_values": len(states)}
        if states:
            row["state_bytes_per_value"] = round(_bytes(client, "fs:v3:{e:*:state") / len(states))
            row["seen_bytes_per_value"] = round(_bytes(client, "fs:v3:{e:*:seen") / len(states))
        by_count[str(entities)] = row
    base = by_count["0"]["us_per_event"]
    for row in by_count.values():
        row["us_added_per_event"] = round(row["us_per_event"] - base, 1)
    return {"declared_entities": by_count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--events", type=int, default=20_000, help="timed events per history")
    parser.add_argument("--fill", type=int, default=200_000,
                        help="events stored before each measurement (history x cards); "
                        "also sizes the hostile card's run (fill / 1,000 batches) and the "
                        "entities' warm-up (fill / 5 events)")  # fmt: skip
    args = parser.parse_args()
    stop_on_signals()
    with tempfile.TemporaryDirectory() as tmp:
        url, record = start_redis(Path(tmp))
        try:
            client = redis.Redis.from_url(url)
            store = OnlineFeatureStore(client)
            result = {
                "benchmark": "features",
                "batch": BATCH,
                **_cost(client, store, args.events, args.fill),
                **_hostile(client, store, args.fill),
                **_decider(client, store, args.events, args.fill),
                **_entities(client, args.events, args.fill // 5),
                "memory": _memory(client),
                **provenance(),
            }
            client.close()
        finally:
            processes.stop(record)
    if not args.json:
        for history, row in result["by_history"].items():
            print(f"history {history:>5}: {row['us_per_event']:>6} µs/event, "
                  f"{row.get('bytes_per_card', '-')} bytes/card "
                  f"(+ {row.get('replay_rows_bytes_per_card', '-')} of replay rows)")  # fmt: skip
        for entities, row in result["declared_entities"].items():
            print(f"{entities:>2} declared entities: {row['us_per_event']} µs/event "
                  f"(+{row['us_added_per_event']})")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
