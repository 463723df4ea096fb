"""The scoring service against in-process ONNX Runtime (the floor), same model, same rows.

Latency p50/p99 at batch 1 and 256 (sequential requests on a kept-alive connection: named
rows in JSON and msgpack, and the stream job's float32 matrix), rows/s at saturation
(concurrent clients sending matrices), and p99 at batch 1 under an open-loop load of 1,000
requests/s (latency counted from each request's scheduled time, so a stall is not hidden).
Client and service share the machine's two cores. Beside in-process scoring, the cost of
counting a batch into the model's drift bins (``drift_count_batch*``), which the service does
for every batch it scores. ``ratio_batch256``: the best service format against in-process.
``service_healthz``: a request that carries and does nothing (``GET /healthz`` on the same
kept-alive connection), the HTTP round trip under every request; ``ratio_batch256_lower_bound``:
(in-process + that round trip) / in-process, a ratio no service over HTTP can beat on this
machine (a real batch also sends its rows, counts drift and explains).

    python -m benchmarks.scoring [--json] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import urllib3

from benchmarks.cleanup import stop_on_signals
from benchmarks.provenance import provenance
from models.features import offline
from models.features.definitions import FEATURE_NAMES
from models.training.datasets import frame_from_transactions
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.devstack import processes
from services.generator import GeneratorConfig, generate
from services.scoring.server import model as scoring_model
from services.scoring.server.metrics import DriftBins
from services.scoring.wire import MATRIX_TYPE, matrix_body


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = np.sort(np.asarray(samples)) * 1000
    return {"p50_ms": round(float(np.percentile(ordered, 50)), 3),
            "p99_ms": round(float(np.percentile(ordered, 99)), 3)}  # fmt: skip


def _timed(call: Callable[[], Any], repeats: int) -> list[float]:
    for _ in range(min(50, repeats)):
        call()  # warm up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _rows(count: int) -> list[dict[str, float]]:
    items = list(generate(GeneratorConfig(seed=5, customers=2_000, fraud_rate=0.01), count))
    frame = offline.compute(frame_from_transactions([i.transaction for i in items]))
    return [dict(zip(FEATURE_NAMES, map(float, r), strict=True)) for r in frame.to_numpy()]


def _start(registry: Path, workdir: Path) -> tuple[str, processes.ProcessRecord]:
    port = processes.free_loopback_port()
    argv = [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
            "--registry", str(registry)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env["FRAUDSTREAM_SCORING_RELOAD_INTERVAL_S"] = "0.2"
    record = processes.spawn("scoring", argv, workdir / "scoring.log", env)
    url = f"http://127.0.0.1:{port}"
    pool = urllib3.PoolManager()
    try:
        processes.wait_until(lambda: pool.request("GET", f"{url}/readyz").status == 200, 60,
                             "ready")  # fmt: skip
    except BaseException:
        processes.stop(record)
        raise
    return url, record


def _get(pool: urllib3.HTTPConnectionPool, path: str) -> None:
    reply = pool.urlopen("GET", path)
    if reply.status != 200:
        raise RuntimeError(f"GET {path}: {reply.status}")


def _post(pool: urllib3.HTTPConnectionPool, body: bytes, kind: str) -> None:
    reply = pool.urlopen("POST", "/v1/score", body=body, headers={"content-type": kind})
    if reply.status != 200:
        raise RuntimeError(f"{reply.status}: {reply.data[:200]!r}")


def _saturation(url: str, body: bytes, rows: int, seconds: float, clients: int) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        pool = urllib3.connection_from_url(url, maxsize=1)
        while time.monotonic() < stop:
            _post(pool, body, MATRIX_TYPE)
            done[i] += rows

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def _open_loop(url: str, body: bytes, rate: float, seconds: float) -> dict[str, float]:
    pool = urllib3.connection_from_url(url, maxsize=1)
    interval, count = 1.0 / rate, int(rate * seconds)
    latencies, start = [], time.perf_counter() + 0.05
    for i in range(count):
        scheduled = start + i * interval
        while (now := time.perf_counter()) < scheduled:
            if scheduled - now > 0.0005:
                time.sleep(scheduled - now - 0.0003)
        _post(pool, body, "application/json")
        latencies.append(time.perf_counter() - scheduled)
    achieved = count / (time.perf_counter() - start)
    return {**_percentiles(latencies), "achieved_rps": round(achieved, 1)}


def _reload_latency(url: str, registry: Path, body: bytes) -> dict[str, Any]:
    """Batch-1 latency before a promotion and in the second after it (the swap happens then)."""
    pool = urllib3.connection_from_url(url, maxsize=1)
    samples: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            reply = pool.urlopen("POST", "/v1/score", body=body,
                                 headers={"content-type": "application/json"})  # fmt: skip
            version = msgspec.json.decode(reply.data)["model_version"]
            samples.append((started, time.perf_counter() - started, version))

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.5)
    reg = Registry(registry)
    current = reg.current() or "v0001"
    source = registry / "versions" / current
    files = {p.name: p.read_bytes() for p in source.iterdir() if p.name != "metadata.json"}
    promoted_at = time.perf_counter()
    new = reg.publish(files, json.loads((source / "metadata.json").read_text()))
    reg.promote(new)
    time.sleep(2.0)
    stop.set()
    sender.join()
    before = [lat for t, lat, _ in samples if t < promoted_at]
    during = [lat for t, lat, _ in samples if promoted_at <= t < promoted_at + 1.0]
    return {
        "before": _percentiles(before),
        "second_after_promotion": _percentiles(during),
        "switched_to": new if samples[-1][2] == new else None,
        "failed": 0,  # a failed request raises above and ends the benchmark
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    parser.add_argument("--repeats", type=int, default=1000, help="requests per latency figure")
    args = parser.parse_args()
    stop_on_signals()

    rows = _rows(4_096)
    version = Registry(DEFAULT_REGISTRY).current() or "v0001"
    local = scoring_model.load(DEFAULT_REGISTRY / "versions" / version)
    matrix = np.array([[r[n] for n in FEATURE_NAMES] for r in rows], dtype=np.float32)
    result: dict[str, Any] = {"benchmark": "scoring", "model_version": version}
    bins = DriftBins()
    for batch in (1, 256):
        result[f"inprocess_batch{batch}"] = _percentiles(
            _timed(partial(local.score, matrix[:batch]), args.repeats)
        )
        scores = local.score(matrix[:batch])
        count = partial(bins.observe, local.version, local.drift_reference, local.feature_names,
                        matrix[:batch], scores)  # fmt: skip
        drift = _percentiles(_timed(count, args.repeats))
        scoring = result[f"inprocess_batch{batch}"]["p50_ms"]
        result[f"drift_count_batch{batch}"] = {
            **drift, "us_per_row": round(drift["p50_ms"] * 1000 / batch, 3),
            "share_of_scoring": round(drift["p50_ms"] / scoring, 3),
        }  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry"
        shutil.copytree(DEFAULT_REGISTRY, registry)
        url, record = _start(registry, Path(tmp))
        try:
            pool = urllib3.connection_from_url(url, maxsize=1)
            for batch in (1, 256):
                payload = {"rows": rows[:batch]}
                for name, kind, body in (
                    ("json", "application/json", msgspec.json.encode(payload)),
                    ("msgpack", "application/msgpack", msgspec.msgpack.encode(payload)),
                    ("matrix", MATRIX_TYPE, matrix_body(FEATURE_NAMES, matrix[:batch])),
                ):
                    samples = _timed(partial(_post, pool, body, kind), args.repeats)
                    result[f"service_{name}_batch{batch}"] = _percentiles(samples)
                    result[f"service_{name}_batch{batch}"]["request_bytes"] = len(body)
            samples = _timed(partial(_get, pool, "/healthz"), args.repeats)
            result["service_healthz"] = _percentiles(samples)
            body256 = matrix_body(FEATURE_NAMES, matrix[:256])
            result["service_rows_per_s_saturation"] = round(
                _saturation(url, body256, 256, args.seconds, clients=2))  # fmt: skip
            body1 = msgspec.json.encode({"rows": rows[:1]})
            result["service_batch1_at_1000rps"] = _open_loop(url, body1, 1000, args.seconds)
            result["reload_batch1"] = _reload_latency(url, registry, body1)
        finally:
            processes.stop(record)
    inproc = result["inprocess_batch256"]["p50_ms"]
    best256 = min(result[f"service_{name}_batch256"]["p50_ms"]
                  for name in ("json", "msgpack", "matrix"))  # fmt: skip
    result["inprocess_rows_per_s_batch256"] = round(256 / (inproc / 1000))
    result["ratio_batch256"] = round(best256 / inproc, 3)
    result["ratio_batch256_json"] = round(result["service_json_batch256"]["p50_ms"] / inproc, 3)
    round_trip = result["service_healthz"]["p50_ms"]
    result["ratio_batch256_lower_bound"] = round((inproc + round_trip) / inproc, 3)
    result.update(provenance())
    if not args.json:
        for key, value in result.items():
            print(f"{key:>34}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
