"""The analysts' workbench: alerts taken into cases per second, and the queue page's time to
first byte and full render with ``--cases`` open cases (goal: p95 at most 200 ms at 10,000).

Alerts are produced to the embedded broker and taken in by the workbench's own intake (decode,
one transaction per batch with its offsets) into the default SQLite store. The page is served
by ``fraudstream workbench`` as its own process and read over loopback HTTP by a signed-in
client; the baseline, in the same run, is the same server's ``/healthz`` (the HTTP floor).

    python -m benchmarks.workbench [--cases 10000] [--requests 200] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Producer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from benchmarks.cleanup import stop_on_signals
from benchmarks.provenance import provenance
from services.core.contract import Alert, Transaction
from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from services.devstack import processes, stack
from services.workbench import accounts, intake
from services.workbench.cases import Case, Role
from services.workbench.store import default_url, engine

PASSWORD = "benchmark password"


def _alerts(count: int) -> list[Alert]:
    now = int(time.time() * 1000)
    alerts = []
    for i in range(count):
        tx = Transaction(
            transaction_id=f"bench-{i}", event_time=now - i * 1_000, card_id=f"tok_card{i % 997}",
            customer_id="tok_u", merchant_id=f"m{i % 311}", merchant_category="5411",
            amount=10.0 + (i * 7919) % 5_000, currency="USD", country="US",
            channel="ecommerce",
        )  # fmt: skip
        alerts.append(Alert(transaction_id=tx.transaction_id, card_id=tx.card_id,
                            event_time=now - i * 1_000, decided_at=now - i * 1_000 + 40,
                            score=((i * 104_729) % 1_000) / 1_000, decision="review",
                            reasons=["rule:amount_spike", "model:count_1h"],
                            model_version="v0001", transaction=tx))  # fmt: skip
    return alerts


def _produce(settings: Settings, alerts: list[Alert]) -> None:
    producer = Producer(librdkafka(settings.kafka))
    for alert in alerts:
        producer.produce(settings.topic.alerts, msgspec.json.encode(alert), alert.card_id)
        producer.poll(0)
    assert producer.flush(60) == 0


def _ingest_per_s(settings: Settings, count: int) -> float:
    """Cases per second through the workbench's intake, from the broker into the store."""
    store = engine(default_url(settings.state_dir))
    source = intake.consumer(settings, store)
    started, made = time.perf_counter(), 0
    deadline = time.monotonic() + 300
    while made < count and time.monotonic() < deadline:
        made += intake.intake_once(settings, store, source).cases
    elapsed = time.perf_counter() - started
    source.close()
    with Session(store) as session:
        assert session.scalar(select(func.count()).select_from(Case)) == count
        accounts.add(session, "bench", PASSWORD, Role.ANALYST)
        session.commit()
    store.dispose()
    return count / elapsed


def _session_cookie(base: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(base + "/login", timeout=10) as reply:
        token = re.search(r'name="csrf" value="([^"]+)"', reply.read().decode())
    assert token, "no CSRF token on the sign-in page"
    form = {"name": "bench", "password": PASSWORD, "csrf": token.group(1)}
    with opener.open(base + "/login", urllib.parse.urlencode(form).encode(), timeout=10) as reply:
        assert 'id="queue"' in reply.read().decode(), "sign-in failed"
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def _timings(port: int, path: str, cookie: str, requests: int) -> dict[str, Any]:
    """Time to first byte and to the last one, per request, on one kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    first, full, size = [], [], 0
    for _ in range(requests):
        started = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": cookie})
        reply = connection.getresponse()
        reply.read(1)
        first.append((time.perf_counter() - started) * 1000)
        size = 1 + len(reply.read())
        full.append((time.perf_counter() - started) * 1000)
        assert reply.status == 200, reply.status
    connection.close()
    return {"ttfb": _percentiles(first), "full": _percentiles(full), "bytes": size}


def _percentiles(ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(ms, n=100)
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "max": round(max(ms), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="open cases in the store")
    parser.add_argument("--requests", type=int, default=200, help="page loads timed")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    stop_on_signals()

    with tempfile.TemporaryDirectory() as state_dir:
        base = Settings.of(state_dir=Path(state_dir))
        state = stack.up(base, feedback=False, workbench=False)
        try:
            settings = stack.client_settings(base, state)
            _produce(settings, _alerts(args.cases))
            ingest = _ingest_per_s(settings, args.cases)
            port = processes.free_loopback_port()
            served = settings.updated({"workbench_port": port})
            argv = [sys.executable, "-m", "services.cli", "workbench"]
            record = processes.spawn("workbench", argv, Path(state_dir) / "workbench.log",
                                     env=served.child_environment())  # fmt: skip
            try:
                processes.wait_until(lambda: processes.port_open(port), 60, "the workbench")
                url = f"http://127.0.0.1:{port}"
                cookie = _session_cookie(url)
                _timings(port, "/", cookie, 5)  # warm: templates compiled, budget read
                queue = _timings(port, "/", cookie, args.requests)
                floor = _timings(port, "/healthz", cookie, args.requests)
            finally:
                processes.stop(record)
        finally:
            stack.down(base)
    result: dict[str, Any] = {
        "benchmark": "workbench",
        "open_cases": args.cases,
        "requests": args.requests,
        "store": "sqlite",
        "ingest_cases_per_s": round(ingest),
        "queue_ttfb_ms": queue["ttfb"],
        "queue_full_ms": queue["full"],
        "queue_bytes": queue["bytes"],
        "baseline_healthz_full_ms": floor["full"],
        "goal_queue_full_p95_ms": 200,
        "goal_met": queue["full"]["p95"] <= 200,
        **provenance(),
    }
    if not args.json:
        for name, value in result.items():
            print(f"{name:>26}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
