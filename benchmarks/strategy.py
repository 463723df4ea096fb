"""The strategy engine's cost per event: CEL rules evaluated as the Decider does, one shared
context per event carrying only the variables the rules name.

For 3 (the shipped default), 30 and 100 rules over features, transaction fields and a lookup
table, on feature rows of generated events; the baseline in the same run is the hand-written
Python of the shipped three rules (what the job ran before strategies were data), so
``ratio_to_python`` says what the data costs; 30 rules again with tables of 50,000 entries
shows that the tables' size costs nothing per event. Goal: 10 µs per event at 30 rules.

    python -m benchmarks.strategy [--json] [--events N]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from benchmarks.provenance import provenance
from models.features import definitions as f
from services.core.contract import Transaction
from stream_jobs import strategy as st

_TEMPLATES = (
    "amount_usd > {x}.0 && count_1h > 3.0",
    "speed_from_prev_kmh > {x}.0 && distance_from_prev_km > 500.0",
    "tiny_count_10m >= 5.0 || (new_device > 0.5 && amount_usd > {x}.0)",
    "country in risky && amount_usd > {x}.0",
    "channel == 'ecommerce' && amount_to_mean_30d > {x}.0",
    "amount_usd > (merchant_category in limits ? limits[merchant_category] : {x}.0)",
)


def _document(rules: int) -> st.Strategy:
    if rules == 3:
        return st.default()
    return st.Strategy.model_validate(
        {
            "tables": {"risky": ["NG", "RU", "KP"], "limits": {"5411": 1500.0, "7995": 2000.0}},
            "rules": [
                {
                    "id": f"r{i}",
                    "when": _TEMPLATES[i % len(_TEMPLATES)].format(x=100 + i),
                    "outcome": "review",
                }
                for i in range(rules)
            ],
        }
    )


def _events(n: int, seed: int = 7) -> list[tuple[list[float], Transaction]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        row = [rng.random() * 10 for _ in f.FEATURE_NAMES]
        row[0] = rng.lognormvariate(3.5, 1.2)  # amount_usd
        tx = Transaction(
            transaction_id=f"t{i}",
            event_time=1_772_323_200_000 + i,
            card_id=f"c{i % 100}",
            customer_id="u",
            merchant_id=f"m{i % 50}",
            merchant_category=rng.choice(["5411", "7995", "5999"]),
            amount=row[0],
            currency="USD",
            country=rng.choice(["US", "GB", "NG"]),
            channel=rng.choice(["ecommerce", "atm"]),
        )
        out.append((row, tx))
    return out


def _python_rules(row: list[float], tx: Transaction) -> int:
    """The shipped three rules as Python (the job's code before strategies were data)."""
    value = dict(zip(f.FEATURE_NAMES, row, strict=True))
    limit = {"5411": 1500.0, "7995": 2000.0}.get(tx.merchant_category, 10_000.0)
    return (
        (value["amount_usd"] > limit)
        + (value["speed_from_prev_kmh"] > 1000 and value["distance_from_prev_km"] > 500)
        + (value["tiny_count_10m"] >= 5)
    )


def _us_per_event(events: list[tuple[list[float], Transaction]], call: Any) -> float:
    for row, tx in events[:1_000]:  # warm
        call(row, tx)
    started = time.perf_counter()
    for row, tx in events:
        call(row, tx)
    return (time.perf_counter() - started) / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    events = _events(args.events)
    python_us = _us_per_event(events, _python_rules)
    results: dict[str, Any] = {"python_3_rules_us_per_event": round(python_us, 2)}
    for rules in (3, 30, 100):
        compiled = st.Compiled(_document(rules))
        us = _us_per_event(events, lambda row, tx, c=compiled: c.evaluate(row, tx, 0.1, 0.01))
        results[f"rules_{rules}"] = {
            "us_per_event": round(us, 2),
            "ratio_to_python": round(us / python_us, 2),
        }
    big = _document(30).model_copy(
        update={
            "tables": {
                "risky": [str(i) for i in range(25_000)],
                "limits": {str(i): float(i) for i in range(25_000)},
            }
        }
    )
    compiled = st.Compiled(big)
    us = _us_per_event(events, lambda row, tx, c=compiled: c.evaluate(row, tx, 0.1, 0.01))
    results["rules_30_tables_50k_entries"] = {
        "us_per_event": round(us, 2),
        "ratio_to_small_tables": round(us / results["rules_30"]["us_per_event"], 2),
    }
    results["goal_us_per_event_at_30_rules"] = 10.0
    results["meets_goal"] = results["rules_30"]["us_per_event"] <= 10.0
    report = {"benchmark": "strategy", "events": args.events, **results, **provenance()}
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
