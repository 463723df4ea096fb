"""Producer throughput into the embedded broker, and schema encode/decode cost.

Baseline, in the same run against the same broker: librdkafka alone sending one pre-encoded
transaction over and over with the same producer settings. The figure that matters is the
full path (generate, validate, encode, produce with delivery callbacks) and its ratio to that.

    python -m benchmarks.produce [--count 300000] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cleanup import stop_on_signals
from benchmarks.provenance import provenance
from services.clients.produce import KafkaSink, generated_items, run
from services.clients.producer import TransactionProducer
from services.core.contract import decode_transaction, encode
from services.core.settings import Settings
from services.devstack import stack
from services.generator import GeneratorConfig, generate


def _librdkafka_alone(settings: Settings, payload: bytes, key: bytes, count: int) -> float:
    producer = TransactionProducer(settings, "bench.baseline")
    started = time.perf_counter()
    for _ in range(count):
        producer.send_raw(key, payload)
    report = producer.flush()
    assert report.delivered == count, report
    return count / (time.perf_counter() - started)


def _full_path(settings: Settings, count: int) -> float:
    config = GeneratorConfig(seed=1)
    summary = run(generated_items(config, count), KafkaSink(settings, "bench.full"), rate=0,
                  labels=None)  # fmt: skip
    assert summary.delivered == count, summary
    return summary.sent / summary.seconds


def _codec_us(count: int) -> dict[str, float]:
    events = [item.transaction for item in generate(GeneratorConfig(seed=2), count)]
    started = time.perf_counter()
    encoded = [encode(event) for event in events]
    encode_us = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    for raw in encoded:
        decode_transaction(raw)
    decode_us = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    generated = sum(1 for _ in generate(GeneratorConfig(seed=3), count))
    generate_us = (time.perf_counter() - started) / generated * 1e6
    return {
        "encode_us_per_event": round(encode_us, 3),
        "decode_validate_us_per_event": round(decode_us, 3),
        "generate_us_per_event": round(generate_us, 3),
        "bytes_per_event": round(sum(map(len, encoded)) / count, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300_000, help="events per measurement")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    stop_on_signals()

    with tempfile.TemporaryDirectory() as state_dir:
        settings = Settings.of(state_dir=Path(state_dir))
        state = stack.up(settings, feedback=False, workbench=False)
        try:
            local = stack.client_settings(settings, state)
            sample = next(generate(GeneratorConfig(seed=9), 1)).transaction
            payload, key = encode(sample), sample.card_id.encode()
            baseline = _librdkafka_alone(local, payload, key, args.count)
            full = _full_path(local, args.count)
        finally:
            stack.down(settings)
    result: dict[str, Any] = {
        "benchmark": "produce",
        "count": args.count,
        "baseline_librdkafka_events_per_s": round(baseline),
        "full_path_events_per_s": round(full),
        "ratio_full_to_baseline": round(full / baseline, 3),
        **_codec_us(50_000),
        **provenance(),
    }
    if not args.json:
        for name, value in result.items():
            print(f"{name:>32}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
