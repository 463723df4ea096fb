"""The synthetic generator: deterministic, realistic shares, labels kept out of the events."""

from __future__ import annotations

import collections
import dataclasses
import itertools

import pytest

from models.features.definitions import haversine_km
from services.core.contract import Transaction, decode_transaction, encode
from services.generator import PATTERNS, GeneratorConfig, Labelled, generate, start_ending_now
from services.generator import world as w


def _encoded(config: GeneratorConfig, count: int) -> list[bytes]:
    return [encode(item.transaction) for item in generate(config, count)]


def test_same_seed_gives_identical_output_and_another_seed_does_not() -> None:
    config = GeneratorConfig(seed=11, fraud_rate=0.05)
    first = _encoded(config, 5_000)
    assert first == _encoded(config, 5_000)
    assert first != _encoded(GeneratorConfig(seed=12, fraud_rate=0.05), 5_000)


@pytest.fixture(scope="module")
def long_run() -> list[Labelled]:
    # Few customers so that the run spans weeks of event time: episodes deferred to the
    # victim's night are then rarely cut off by the end of the run.
    return list(generate(GeneratorConfig(seed=5, customers=2_000, fraud_rate=0.05), 200_000))


def test_fraud_rate_and_pattern_shares_are_within_tolerance(long_run: list[Labelled]) -> None:
    fraud = [item for item in long_run if item.is_fraud]
    assert len(fraud) / len(long_run) == pytest.approx(0.05, abs=0.004)
    shares = collections.Counter(item.pattern for item in fraud)
    for pattern in PATTERNS:
        assert shares[pattern.name] / len(fraud) == pytest.approx(pattern.share, abs=0.05), (
            pattern.name
        )


def test_default_fraud_rate_is_about_half_a_percent() -> None:
    items = list(generate(GeneratorConfig(seed=3, customers=2_000), 100_000))
    assert sum(item.is_fraud for item in items) / len(items) == pytest.approx(0.005, abs=0.002)


def test_events_are_valid_unique_and_in_event_time_order(long_run: list[Labelled]) -> None:
    sample = long_run[:20_000]
    times = [item.transaction.event_time_ms for item in sample]
    assert times == sorted(times)
    assert len({item.transaction.transaction_id for item in sample}) == len(sample)
    for item in itertools.islice(sample, 2_000):
        raw = encode(item.transaction)
        assert decode_transaction(raw) == item.transaction
        assert b"fraud" not in raw
        assert b"pattern" not in raw


def _by_pattern(run: list[Labelled], name: str) -> list[Transaction]:
    return [item.transaction for item in run if item.pattern == name]


def test_card_testing_is_tiny_online_charges_from_a_new_device(long_run: list[Labelled]) -> None:
    events = _by_pattern(long_run, "card_testing")
    fx = {c.currency: c.fx_per_usd for c in w.CITIES}
    tiny = [t for t in events if t.amount / fx[t.currency] <= 2.5]
    assert all(t.channel == "ecommerce" for t in events)
    assert all(t.device_id and t.device_id.startswith("dev_x") for t in events)
    assert len(tiny) / len(events) > 0.9  # an episode may end with one large purchase


def test_impossible_travel_is_far_from_home(long_run: list[Labelled]) -> None:
    events = _by_pattern(long_run, "impossible_travel")
    assert events
    homes = {t.card_id: t for t in (i.transaction for i in long_run if not i.is_fraud)}
    far = 0
    for t in events:
        home = homes.get(t.card_id)
        if home and home.channel == "card_present" and home.lat is not None and t.lat is not None:
            assert home.lon is not None
            assert t.lon is not None
            far += haversine_km(home.lat, home.lon, t.lat, t.lon) > 2_000
    assert far > 0


def test_night_high_risk_happens_at_local_night(long_run: list[Labelled]) -> None:
    events = _by_pattern(long_run, "night_high_risk_mcc")
    assert events
    for t in events:
        assert t.merchant_category in w.HIGH_RISK_MCCS
        local_hours = [
            (t.event_time_ms / 3_600_000 + c.utc_offset_h) % 24
            for c in w.CITIES
            if c.country == t.country
        ]
        # starts 01:00-05:00 at home; at most two gaps of 31 minutes follow
        assert any(1 <= hour < 6.1 for hour in local_hours), local_hours


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="fraud rate"):
        GeneratorConfig(fraud_rate=0.9)


def test_a_stream_started_for_now_ends_within_the_day_before_now() -> None:
    """Its events are those of any start a whole number of days away, moved: never ahead."""
    config = GeneratorConfig(seed=12, customers=2_000)
    now = 1_790_000_000_000
    start = start_ending_now(config, 3_000, now)
    moved = [i.transaction for i in generate(dataclasses.replace(config, start_ms=start), 3_000)]
    assert now - 86_400_000 < max(tx.event_time_ms for tx in moved) <= now
    other = dataclasses.replace(config, start_ms=start - 3 * 86_400_000)
    earlier = [i.transaction for i in generate(other, 3_000)]
    assert [tx.event_time_ms - 3 * 86_400_000 for tx in moved] == [
        tx.event_time_ms for tx in earlier
    ]
