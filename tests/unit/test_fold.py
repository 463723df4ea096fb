"""``models.features.fold``: the one feature fold, checked on hand-made cases and by properties."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import definitions as f
from models.features.fold import (
    MERCHANT_DAYS_BACK,
    MERCHANTS_KEPT,
    NO_MERCHANT_HISTORY,
    PLACES_KEPT,
    RING,
    CardEvent,
    CardState,
    ident,
    merchant_features,
    merchant_last_day,
    step,
)

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z, a Sunday
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CardState).decode


def _event(t: int, usd: float = 30.0, merchant: str = "m1", **more: object) -> CardEvent:
    fields = {"country": "US", "device": ident("d1"), "lat": None, "lon": None,
              "mcc": "5411", "channel": "card_present"} | more  # fmt: skip
    return CardEvent(t, usd, ident(merchant), **fields)  # type: ignore[arg-type]


def _fold(state: CardState, *events: CardEvent) -> dict[str, float]:
    row: list[float] = []
    for event in events:
        row = step(state, event, NO_MERCHANT_HISTORY)
    return dict(zip(f.FEATURE_NAMES, row, strict=True))


def test_no_history_gives_the_documented_defaults() -> None:
    out = _fold(CardState(), _event(T0))
    assert [out[n] for n in ("count_1m", "count_1h", "count_24h", "count_7d", "count_30d")] == [
        1
    ] * 5
    assert out["seconds_since_prev"] == f.NO_PREVIOUS_S
    assert (out["amount_to_mean_30d"], out["amount_zscore_30d"]) == (1.0, 0.0)
    assert (out["new_device"], out["new_country"]) == (0.0, 0.0)
    assert (out["hour_of_day"], out["day_of_week"]) == (0.0, 6.0)  # Sunday midnight, UTC


def test_windows_count_what_lies_within_them() -> None:
    state = CardState()
    history = [_event(T0 - ago, usd) for ago, usd in (
        (20 * f.DAY_MS, 10.0), (3 * f.DAY_MS, 20.0), (5 * f.HOUR_MS, 30.0),
        (30 * f.MINUTE_MS, 40.0), (30 * f.SECOND_MS, 50.0),
    )]  # fmt: skip
    out = _fold(state, *history, _event(T0, 150.0))
    assert (out["count_1m"], out["sum_1m"], out["max_1m"]) == (2, 200.0, 150.0)
    assert (out["count_1h"], out["sum_1h"]) == (3, 240.0)
    assert (out["count_24h"], out["max_24h"]) == (4, 150.0)
    assert (out["count_7d"], out["mean_7d"]) == (5, 58.0)
    assert (out["count_30d"], out["mean_30d"]) == (6, 50.0)
    assert out["amount_to_mean_30d"] == 150.0 / 30.0
    assert out["seconds_since_prev"] == 30.0


def test_a_late_event_is_counted_in_its_own_time() -> None:
    state = CardState()
    _fold(state, _event(T0 - 50 * f.MINUTE_MS), _event(T0))
    late = _fold(state, _event(T0 - 40 * f.MINUTE_MS, 5.0))
    assert late["count_1h"] == 2  # its own hour: the event before it, not the one after
    assert late["count_1m"] == 1
    assert late["seconds_since_prev"] == 0.0  # the documented rule for late events
    after = _fold(state, _event(T0 + f.SECOND_MS))
    assert (after["count_1h"], after["count_30d"]) == (4, 4)
    assert state.latest == T0 + f.SECOND_MS


def test_an_event_older_than_the_history_is_decided_alone_and_not_recorded() -> None:
    state = CardState()
    _fold(state, *(_event(T0 - i * f.HOUR_MS) for i in range(5, 0, -1)))
    before = _encode(state)
    old = _fold(state, _event(T0 - 40 * f.DAY_MS))
    assert old["count_30d"] == 1
    assert old["seconds_since_prev"] == f.NO_PREVIOUS_S
    assert _encode(state) == before


def test_trimming_follows_the_cards_latest_time_not_the_incoming_event() -> None:
    state = CardState()
    _fold(state, *(_event(T0 + i * f.DAY_MS) for i in range(10)))
    late = _fold(state, _event(T0 + 2 * f.DAY_MS + 1))  # late, but within the 30 days
    assert late["count_30d"] == 4  # days 0 to 2 and itself: its window ends at its own time
    assert len(state.day_k) == 10  # nothing forgotten: the latest time did not move back
    assert _fold(state, _event(T0 + 10 * f.DAY_MS))["count_30d"] == 12


def test_merchant_windows_end_a_delay_before_the_event_day() -> None:
    day = T0 // f.DAY_MS
    delay = f.MERCHANT_DELAY_DAYS
    transactions = {day - delay - 1: 10, day - delay: 99, day - delay - 5: 4, day - 40: 7}
    frauds = {day - delay - 1: 5, day - delay: 99, day - delay - 5: 1}
    last = merchant_last_day(day)
    back = range(MERCHANT_DAYS_BACK)
    features = merchant_features([transactions.get(last - i, 0) for i in back],
                                 [frauds.get(last - i, 0) for i in back])  # fmt: skip
    tx_1d, tx_7d, tx_30d, risk_1d, risk_7d, risk_30d = features
    assert (tx_1d, tx_7d, tx_30d) == (10, 14, 14)  # day - delay is too recent, day - 40 too old
    assert (risk_1d, risk_7d) == (0.5, 6 / 14)
    assert risk_30d == risk_7d
    assert merchant_features([], []) == NO_MERCHANT_HISTORY == [0.0] * 6


def test_state_is_bounded_for_a_card_that_never_stops() -> None:
    state = CardState()
    burst = (_event(T0 + i * 60, 1.0, merchant=f"m{i}", device=ident(f"d{i}"), country=f"C{i}")
             for i in range(10_000))  # 10,000 events in 10 minutes, all different  # fmt: skip
    out = _fold(state, *burst)
    assert len(state.ring_t) == RING
    assert out["count_1m"] == RING
    assert out["count_24h"] == 10_000  # the hour buckets still count every event
    assert len(state.merchants) == MERCHANTS_KEPT
    assert len(state.devices) == len(state.countries) == PLACES_KEPT
    assert len(_encode(state)) < 4_000


def test_a_month_of_history_stays_within_the_bucket_bounds() -> None:
    state = CardState()
    _fold(state, *(_event(T0 + i * 43 * f.MINUTE_MS) for i in range(1_000)))  # 30 days
    assert len(state.day_k) <= 30
    assert len(state.hour_k) <= 24
    assert len(_encode(state)) < 3_000


def test_an_event_older_than_a_full_ring_is_decided_and_counted() -> None:
    """64 events 1 s apart, then one 5 s before the first: once a ZeroDivisionError."""
    state, start = CardState(), T0 + 10 * f.MINUTE_MS
    _fold(state, *(_event(start + i * f.SECOND_MS) for i in range(RING)))
    late = _fold(state, _event(start - 5 * f.SECOND_MS, 7.0))
    assert (late["count_1m"], late["sum_1m"], late["mean_1m"], late["max_1m"]) == (1, 7, 7, 7)
    assert late["count_1h"] == 1  # what the full ring holds lies after it
    assert late["count_24h"] == RING + 1  # the hour buckets count every event
    assert late["count_30d"] == RING + 1
    assert len(state.ring_t) == RING
    assert state.ring_t[0] == start
    after = _fold(state, _event(start + RING * f.SECOND_MS))
    assert (after["count_1h"], after["count_24h"]) == (RING, RING + 2)


_events = st.lists(
    st.tuples(
        st.integers(-2 * f.DAY_MS, 40 * f.DAY_MS),
        st.floats(0.01, 5_000.0),
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from([None, "d1", "d2"]),
        st.sampled_from([None, (40.0, -74.0), (48.8, 2.3)]),
    ),
    min_size=1,
    max_size=60,
)


# Hundreds of events within a few hours, in any order: the ring is full and late events
# older than all of it arrive (a card-testing burst replayed out of order).
_bursts = st.lists(
    st.tuples(
        st.integers(0, 3 * f.HOUR_MS),
        st.floats(0.01, 5.0),
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from([None, "d1", "d2"]),
        st.sampled_from([None, (40.0, -74.0), (48.8, 2.3)]),
    ),
    min_size=RING,
    max_size=400,
)
_Raw = list[tuple[int, float, str, str | None, tuple[float, float] | None]]


@settings(max_examples=200, deadline=None)
@given(_events)
def test_a_state_stored_between_events_folds_exactly_like_one_kept_in_memory(raw: _Raw) -> None:
    """The online path stores the state after every batch; the offline path never does."""
    _check_stored_equals_kept(raw)


@settings(max_examples=60, deadline=None)
@given(_bursts)
def test_bursts_out_of_order_on_a_full_ring_decide_every_event(raw: _Raw) -> None:
    _check_stored_equals_kept(raw)


def _check_stored_equals_kept(raw: _Raw) -> None:
    events = [
        _event(T0 + t, usd, merchant, device=ident(d) if d else None,
               lat=place[0] if place else None, lon=place[1] if place else None)
        for t, usd, merchant, d, place in raw
    ]  # fmt: skip
    kept, stored = CardState(), CardState()
    for event in events:
        expected = step(kept, event, NO_MERCHANT_HISTORY)
        actual = step(stored, event, NO_MERCHANT_HISTORY)
        stored = _decode(_encode(stored))
        assert actual == expected
        assert all(v == v for v in actual)  # no NaN, whatever the order of events
        named = dict(zip(f.FEATURE_NAMES, actual, strict=True))
        assert min(named["count_1m"], named["count_1h"], named["count_24h"]) >= 1  # itself
        assert len(stored.ring_t) <= RING
