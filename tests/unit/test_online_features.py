"""``features_from_history``: the online fold over a card's past, checked on hand-made cases."""

from __future__ import annotations

import msgspec

from models import features as f
from models.online import features_from_history
from models.redis_layout import PriorEvent
from services.core.contract import Transaction

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z, a Sunday
TX = Transaction(
    transaction_id="t9", event_time=T0, card_id="c1", customer_id="u1", merchant_id="m1",
    merchant_category="5411", amount=30.0, currency="USD", country="US", channel="ecommerce",
    device_id="d1", lat=40.0, lon=-74.0,
)  # fmt: skip


def _prior(tid: str, ago_ms: int, usd: float, **more: object) -> PriorEvent:
    fields = {"merchant_id": "m0", "country": "US", "device_id": "d1", "lat": None,
              "lon": None} | more  # fmt: skip
    return PriorEvent(tid, T0 - ago_ms, usd, **fields)  # type: ignore[arg-type]


def _named(values: list[float]) -> dict[str, float]:
    return dict(zip(f.FEATURE_NAMES, values, strict=True))


def test_no_history_gives_the_documented_defaults() -> None:
    out = _named(features_from_history(TX, [], 0.0, 0.0))
    assert (out["count_1h"], out["sum_1h"], out["max_24h"]) == (1.0, 30.0, 30.0)
    assert out["history_count_30d"] == 0.0
    assert out["seconds_since_prev"] == f.NO_PREVIOUS_S
    assert out["amount_to_mean_30d"] == 1.0


def test_windows_count_only_what_falls_inside_them() -> None:
    history = [
        _prior("a", 30 * f.SECOND_MS, 10.0),  # inside 1 m
        _prior("b", 2 * f.HOUR_MS, 20.0, merchant_id="m2", country="FR"),  # 24 h, not 1 h
        _prior("c", 40 * f.DAY_MS, 1_000.0),  # outside 30 days: ignored everywhere
    ]
    out = _named(features_from_history(TX, history, 0.0, 0.0))
    assert (out["count_1m"], out["sum_1m"]) == (2.0, 40.0)
    assert (out["count_1h"], out["count_24h"], out["sum_24h"]) == (2.0, 3.0, 60.0)
    assert out["history_count_30d"] == 2.0
    assert out["amount_to_mean_30d"] == 30.0 / 15.0
    assert out["seconds_since_prev"] == 30.0
    assert out["distinct_countries_24h"] == 2.0  # US (twice) and FR, this event included


def test_later_events_and_the_event_itself_are_ignored() -> None:
    itself = _prior("t9", 0, 30.0)
    later = PriorEvent("z", T0 + 1_000, 99.0, "m0", "US", "d1", None, None)
    assert features_from_history(TX, [itself, later], 0.0, 0.0) == features_from_history(
        TX, [], 0.0, 0.0
    )


def test_distance_and_speed_from_the_previous_located_event() -> None:
    history = [_prior("a", f.HOUR_MS, 10.0, lat=41.0, lon=-74.0)]
    out = _named(features_from_history(TX, history, 0.0, 0.0))
    assert abs(out["distance_from_prev_km"] - 111.19) < 0.1  # one degree of latitude
    assert abs(out["speed_from_prev_kmh"] - out["distance_from_prev_km"]) < 1e-9  # in one hour
    assert out["hour_of_day"] == 19.0  # UTC-5 at 74 degrees west: 19:00 on the Saturday
    assert out["day_of_week"] == 5.0


def test_history_order_does_not_matter() -> None:
    history = [_prior(str(i), i * 60_000, float(i)) for i in range(1, 30)]
    forward = features_from_history(TX, history, 1.0, 4.0)
    assert forward == features_from_history(TX, list(reversed(history)), 1.0, 4.0)
    assert msgspec.json.encode(forward)  # finite, plain floats
