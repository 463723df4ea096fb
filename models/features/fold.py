"""How every feature is computed: one fold over a card's events, shared by both paths.

``step(state, event, merchant)`` takes a card's bounded state and one event, updates the state
in place and returns the event's whole feature row (``FEATURE_NAMES`` order). It does no I/O
and reads no clock: the stream job keeps each card's state in Redis (``models.online.store``),
training folds a whole history in memory (``models.features.offline``), and both call this function.

The state is bounded whatever the card's history (``models.features.definitions`` documents
each part): a ring of the last hour's events (at most ``RING``), hour buckets over 24 h, day
buckets over 30 days, the latest located event, and capped maps of recent merchants, countries
and devices.
The work per event is a fixed number of steps over those bounded parts.

Event time rules: the state is trimmed by the card's own latest accepted event time, never by
the incoming event's, so an event dated in the future cannot push a card's history out (the
job refuses events too far ahead of the clock before they get here). A late event within the
card's 30 days is counted in its own buckets and sees the windows that end at its own time. An
event older than that is decided as the card's first event and not recorded. The ring keeps
the ``RING`` latest events of the hour: an event older than everything a full ring holds is
still counted in its own 1-minute, 10-minute and 1-hour windows (with what the ring holds
within them) and in its hour and day buckets, then leaves the ring as its oldest entry.
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from models.features import definitions as f

RING = 64  # events of the last hour kept for the exact 1-minute, 10-minute and 1-hour windows
MERCHANTS_KEPT = 32  # distinct merchants remembered (24 h); more saturate the count here
PLACES_KEPT = 16  # distinct countries, and distinct devices, remembered (30 days)
K = TypeVar("K", int, str)
_DAYS, _HOURS = f.HISTORY_MS // f.DAY_MS, f.DAY_MS // f.HOUR_MS  # 30 day buckets, 24 hour ones


class CardEvent(NamedTuple):
    """What the fold reads of a transaction (identifiers hashed: the state stores no ids)."""

    time: int  # event time, epoch ms
    usd: float
    merchant: int  # ``ident`` of the merchant id
    country: str
    device: int | None  # ``ident`` of the device id
    lat: float | None
    lon: float | None
    mcc: str
    channel: str


class CardState(msgspec.Struct, array_like=True):
    """A card's bounded state (serialised with msgpack into one Redis string)."""

    latest: int = -1  # the latest accepted event time (ms); -1: no history
    ring_t: list[int] = []  # the last hour's events (at most RING), by time
    ring_usd: list[float] = []
    hour_k: list[int] = []  # hour buckets (epoch hours) of the last 24 h, ascending
    hour_n: list[int] = []
    hour_sum: list[float] = []
    hour_max: list[float] = []
    day_k: list[int] = []  # day buckets (UTC epoch days) of the last 30 days, ascending
    day_n: list[int] = []
    day_sum: list[float] = []
    day_sq: list[float] = []
    located: tuple[float, float, int] | None = None  # (lat, lon, time) of the latest located
    merchants: dict[int, int] = {}  # merchant ident -> last seen (ms)
    countries: dict[str, int] = {}
    devices: dict[int, int] = {}
    # Kept by the online store; the fold neither reads nor writes them:
    latest_features: tuple[int, str, list[float]] | None = None  # the latest (time, id, row)
    recent: list[tuple[bytes, int]] = []  # (digest, when, job clock ms) of the rows Redis keeps
    links: dict[str, dict[int, int]] = {}  # per declared entity, its values used (``entities``)


def ident(value: str) -> int:
    """A stable 32-bit code of an identifier (never Python's per-process ``hash``)."""
    return zlib.crc32(value.encode())


def step(state: CardState, event: CardEvent, merchant: Sequence[float]) -> list[float]:
    """Fold ``event`` into ``state``; its features, ``merchant`` being ``merchant_features``."""
    t = event.time
    if state.latest >= 0 and t <= state.latest - f.HISTORY_MS:
        return step(CardState(), event, merchant)  # too late to count: decided alone
    previous = state.latest
    if t > state.latest:
        state.latest = t
        _trim(state)
    day, hour = t // f.DAY_MS, t // f.HOUR_MS
    i, j = _span(state.day_k, day - _DAYS, day)
    prior_n = sum(state.day_n[i:j])
    prior_mean = sum(state.day_sum[i:j]) / prior_n if prior_n else 0.0
    prior_var = max(sum(state.day_sq[i:j]) / prior_n - prior_mean**2, 0.0) if prior_n else 0.0
    seen_device = _recent(state.devices, event.device, t - f.HISTORY_MS)
    seen_country = _recent(state.countries, event.country, t - f.HISTORY_MS)
    moved = _movement(state.located, event)
    _add(state, event, day, hour)

    usd, row = event.usd, [event.usd]
    for window in f.VELOCITY_WINDOWS.values():
        row += _ring_window(state, t - window, t) if window <= f.HOUR_MS else _hours(state, hour)
    for days in f.SPENDING_DAYS:
        a, b = _span(state.day_k, day - days, day)
        count = sum(state.day_n[a:b])
        row += [float(count), sum(state.day_sum[a:b]) / count]
    row += [
        usd / prior_mean if prior_n else 1.0,
        f.zscore(usd, prior_mean, math.sqrt(prior_var)) if prior_n >= 2 else 0.0,
        max(t - previous, 0) / f.SECOND_MS if previous > t - f.HISTORY_MS else f.NO_PREVIOUS_S,
        _distinct(state.merchants, t - f.DAY_MS),
        _distinct(state.countries, t - f.DAY_MS),
        _distinct(state.devices, t - f.DAY_MS),
        *moved,
        float(event.device is not None and prior_n > 0 and not seen_device),
        float(prior_n > 0 and not seen_country),
        f.mcc_risk(event.mcc),
        *merchant,
        float(sum(u <= f.TINY_USD for u in _ring_values(state, t - f.TINY_WINDOW_MS, t))),
        float(event.channel == "ecommerce"),
        float(event.channel == "atm"),
    ]
    _cap_ring(state)  # an event older than a full ring saw itself; now it leaves
    return row


def merchant_features(transactions: Sequence[int], frauds: Sequence[int]) -> list[float]:
    """Count and fraud share of a merchant's transactions over each ``MERCHANT_DAYS`` window
    of whole days ending before ``MERCHANT_DELAY_DAYS`` before the event's day, when their
    labels are known. ``transactions[i]`` and ``frauds[i]`` count day ``event day - delay -
    1 - i`` (``merchant_days_back`` of them)."""
    counts, risks = [], []
    for days in f.MERCHANT_DAYS:
        n, fraud = sum(transactions[:days]), sum(frauds[:days])
        counts.append(float(n))
        risks.append(f.merchant_risk(fraud, n))
    return counts + risks


def merchant_last_day(event_day: int) -> int:
    """The latest day a merchant window of an event on ``event_day`` counts."""
    return event_day - f.MERCHANT_DELAY_DAYS - 1


MERCHANT_DAYS_BACK = max(f.MERCHANT_DAYS)
NO_MERCHANT_HISTORY = merchant_features([], [])


def _span(keys: list[int], after: int, upto: int) -> tuple[int, int]:
    """The index range of ``keys`` (ascending) within ``(after, upto]``."""
    return bisect_right(keys, after), bisect_right(keys, upto)


def _trim(state: CardState) -> None:
    """Forget what has left every window, judged by the card's latest time; cap the maps."""
    latest = state.latest
    if state.ring_t and state.ring_t[0] <= latest - f.HOUR_MS:
        cut = bisect_right(state.ring_t, latest - f.HOUR_MS)
        del state.ring_t[:cut], state.ring_usd[:cut]
    if state.hour_k and state.hour_k[0] <= latest // f.HOUR_MS - _HOURS:
        cut = bisect_right(state.hour_k, latest // f.HOUR_MS - _HOURS)
        del state.hour_k[:cut], state.hour_n[:cut], state.hour_sum[:cut], state.hour_max[:cut]
    if state.day_k and state.day_k[0] <= latest // f.DAY_MS - _DAYS:
        cut = bisect_right(state.day_k, latest // f.DAY_MS - _DAYS)
        del state.day_k[:cut], state.day_n[:cut], state.day_sum[:cut], state.day_sq[:cut]


def _add(state: CardState, event: CardEvent, day: int, hour: int) -> None:
    t, usd = event.time, event.usd
    at = bisect_right(state.ring_t, t)
    state.ring_t.insert(at, t)
    state.ring_usd.insert(at, usd)
    if at > 0:  # one older than all a full ring holds stays for its own row (``step`` caps)
        _cap_ring(state)
    k = _bucket(state.hour_k, hour, (state.hour_n, state.hour_sum, state.hour_max))
    state.hour_n[k] += 1
    state.hour_sum[k] += usd
    state.hour_max[k] = max(state.hour_max[k], usd)
    k = _bucket(state.day_k, day, (state.day_n, state.day_sum, state.day_sq))
    state.day_n[k] += 1
    state.day_sum[k] += usd
    state.day_sq[k] += usd * usd
    _remember(state.merchants, event.merchant, t, MERCHANTS_KEPT, state.latest - f.DAY_MS)
    _remember(state.countries, event.country, t, PLACES_KEPT, state.latest - f.HISTORY_MS)
    if event.device is not None:
        _remember(state.devices, event.device, t, PLACES_KEPT, state.latest - f.HISTORY_MS)
    placed = event.lat is not None and event.lon is not None
    if placed and (state.located is None or t >= state.located[2]):
        state.located = (event.lat, event.lon, t)  # type: ignore[assignment]


def _cap_ring(state: CardState) -> None:
    """Keep the ring's ``RING`` latest events (the oldest go first, a late one included)."""
    if len(state.ring_t) > RING:
        del state.ring_t[:-RING], state.ring_usd[:-RING]


def _bucket(keys: list[int], key: int, columns: tuple[list[Any], ...]) -> int:
    """The index of bucket ``key``, inserted empty (zeros) if absent."""
    if keys and keys[-1] == key:
        return len(keys) - 1
    at = bisect_right(keys, key)
    if at and keys[at - 1] == key:
        return at - 1
    keys.insert(at, key)
    for column in columns:
        column.insert(at, 0)
    return at


def _remember(seen: dict[K, int], key: K, t: int, kept: int, stale: int) -> None:
    """Note ``key`` as seen at ``t``; past ``kept`` keys, forget those seen at ``stale`` or
    before, then the one seen longest ago."""
    if seen.get(key, t) <= t:
        seen[key] = t
    if len(seen) > kept:
        for old in [k for k, last in seen.items() if last <= stale]:
            del seen[old]
        if len(seen) > kept:
            del seen[min(seen, key=seen.__getitem__)]


def _recent(seen: dict[K, int], key: K | None, after: int) -> bool:
    return key is not None and seen.get(key, after) > after


def _distinct(seen: dict[K, int], after: int) -> float:
    return float(sum(last > after for last in seen.values()))


def _ring_values(state: CardState, after: int, upto: int) -> list[float]:
    i, j = _span(state.ring_t, after, upto)
    return state.ring_usd[i:j]


def _ring_window(state: CardState, after: int, upto: int) -> list[float]:
    """count, sum, mean and max of the card's amounts in ``(after, upto]`` (this one included)."""
    amounts = _ring_values(state, after, upto)
    total = sum(amounts)
    return [float(len(amounts)), total, total / len(amounts), max(amounts)]


def _hours(state: CardState, hour: int) -> list[float]:
    """count, sum, mean and max over the current hour and the 23 before it."""
    i, j = _span(state.hour_k, hour - _HOURS, hour)
    count, total = sum(state.hour_n[i:j]), sum(state.hour_sum[i:j])
    return [float(count), total, total / count, max(state.hour_max[i:j])]


def _movement(located: tuple[float, float, int] | None, event: CardEvent) -> list[float]:
    """Distance and speed from the card's latest located event; local hour and weekday."""
    t = event.time
    before = located if located is not None and located[2] > t - f.HISTORY_MS else None
    distance = speed = 0.0
    if event.lat is not None and event.lon is not None and before is not None:
        distance = f.haversine_km(event.lat, event.lon, before[0], before[1])
        speed = distance / max(abs(t - before[2]) / f.HOUR_MS, f.MIN_TRAVEL_H)
    lon = event.lon if event.lat is not None and event.lon is not None else None
    known_lon = lon if lon is not None else (before[1] if before is not None else 0.0)
    hour, weekday = f.local_hour_and_weekday(t, f.utc_offset_hours(known_lon))
    return [distance, speed, float(hour), float(weekday)]
