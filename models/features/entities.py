"""Features over declared entities and declared attributes: one fold, online and offline.

An entity is the value of one or two fields of a transaction (an e-mail domain, a device, a
BIN and e-mail domain pair: ``services.core.signals.Entity``). Per entity value the fold keeps
bounded state: amounts in 10-minute buckets over the last hour, hour buckets over 24 h and day
buckets over 30 days (count, sum and max, amounts in integer hundredths of a cent so that
Redis and Python add them exactly alike), when it was first and last seen, and the cards that
used it (at most ``CARDS_KEPT``, the longest unseen forgotten first). Per card and entity,
the values the card used (at most ``VALUES_KEPT``). An event's features, itself included:

- ``ent_<E>_<stat>_<window>``: count, sum, mean and max of the entity's USD amounts; 1 h is
  the event's 10-minute bucket and the 5 before it, 24 h its hour and the 23 before, 7 and 30
  days its UTC day and the 6 or 29 before (the card's own 24 h, 7 and 30 days are the same);
- ``ent_<E>_first_seen_s``: since the entity was first seen (0: now); ``ent_<E>_last_seen_s``:
  since its latest event before this one (30 days: never; a late event: 0);
- ``ent_<E>_cards_24h``/``_30d``: distinct cards that used the entity (the link counts that
  expose a ring: many cards on one device); ``card_<E>_24h``/``_30d``: distinct values of the
  entity the card used (one card on many addresses).

An event without the entity's fields has NaN for its features and changes no state. Events
are folded in arrival order (offline: (event_time, transaction_id) order); a bucket is kept
while it is in reach of the entity's latest event, and an event older than 30 days before
it is decided alone and not recorded, as a card's. Attribute features: a number or boolean as
it is, a category as a stable 24-bit code of its value, a timestamp as the seconds from it to
the event; NaN when missing.
"""

from __future__ import annotations

import hashlib
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Final

import msgspec

from models.features import definitions as f
from services.core.contract import AttributeValue, Transaction, parse_event_time
from services.core.signals import EARLIEST_TIMESTAMP_MS, Attribute, Entity, Signals

AMOUNT_SCALE: Final = 10_000  # amounts kept in integer 1/100 cents
CARDS_KEPT: Final = 64
STATE_TTL_MS: Final = f.HISTORY_MS + f.DAY_MS  # an entity unseen this long is forgotten
VALUES_KEPT: Final = 16
TEN_MINUTES_MS: Final = 10 * f.MINUTE_MS
TIERS: Final = ((TEN_MINUTES_MS, 6), (f.HOUR_MS, 24), (f.DAY_MS, 30))
"""Bucket tiers: (width ms, buckets kept); ``models.online.ops`` holds the same in Lua."""
WINDOW_TIER: Final = {"1h": (0, 6), "24h": (1, 24), "7d": (2, 7), "30d": (2, 30)}
"""Window -> (tier, buckets summed)."""
NAN: Final = float("nan")
_CODE_MASK: Final = (1 << 24) - 1  # a float32 holds every code exactly
SEPARATOR: Final = "\x1f"  # between the parts of a pair entity's value


def category_code(value: str) -> float:
    """A category's feature value: stable across processes and exact in float32."""
    return float(zlib.crc32(value.encode()) & _CODE_MASK)


def attribute_feature(declared: Attribute, value: AttributeValue, event_time_ms: int) -> float:
    """One attribute's feature value (NaN when missing)."""
    if value is None:
        return NAN
    if declared.type == "category":
        return category_code(str(value))
    if declared.type == "timestamp":
        at = (parse_event_time(value, "attribute", EARLIEST_TIMESTAMP_MS)
              if isinstance(value, (int, str)) else event_time_ms)  # fmt: skip
        return (event_time_ms - at) / f.SECOND_MS
    return float(value)


def attribute_names(signals: Signals) -> tuple[str, ...]:
    return tuple(
        f"attr_{name}_age_s" if a.type == "timestamp" else f"attr_{name}"
        for name, a in signals.attributes.items()
    )


@cache
def entity_names(entity: Entity) -> tuple[str, ...]:
    e = f"ent_{entity.name}"
    return (
        *(f"{e}_{stat}_{w}" for w in entity.windows for stat in entity.stats),
        f"{e}_first_seen_s", f"{e}_last_seen_s", f"{e}_cards_24h", f"{e}_cards_30d",
        f"card_{entity.name}_24h", f"card_{entity.name}_30d",
    )  # fmt: skip


def signal_feature_names(signals: Signals) -> tuple[str, ...]:
    """The features a signals file adds after the built-in ones, in order."""
    return attribute_names(signals) + tuple(n for e in signals.entities for n in entity_names(e))


def serving_names(signals: Signals) -> tuple[str, ...]:
    """Every feature the job computes with this signals file, in order: what a model may use."""
    return f.FEATURE_NAMES + signal_feature_names(signals)


def entity_value(entity: Entity, tx: Transaction) -> str | None:
    """The entity's value in ``tx`` (its fields joined), or None if one is missing."""
    parts, attributes = [], tx.attributes or {}
    for name in entity.by:
        value = getattr(tx, name) if name in _CONTRACT_FIELDS else attributes.get(name)
        if value is None or value == "":
            return None
        parts.append(entity_part(value))
    return SEPARATOR.join(parts)


def entity_part(value: object) -> str:
    """A field's value as part of an entity's: a number in one spelling (1234 and 1234.0
    name the same code, as a file with missing values reads it)."""
    if isinstance(value, str):
        return value
    return repr(float(value))  # type: ignore[arg-type]


_CONTRACT_FIELDS: Final = frozenset(Transaction.__struct_fields__)


def value_digest(value: str) -> str:
    """What names an entity value in a Redis key: never the raw value."""
    return hashlib.blake2b(value.encode(), digest_size=12).hexdigest()


def value_ident(value: str) -> int:
    return zlib.crc32(value.encode())


def _empty_buckets() -> list[list[list[int]]]:
    return [[[], [], [], []] for _ in TIERS]


class EntityState(msgspec.Struct, array_like=True):
    """One entity value's state; msgpack in one Redis string, which ``models.online.ops``'
    ``commit_entity`` changes in place exactly as :func:`add` does."""

    first: int = -1  # event time (ms) first seen; -1: never
    last: int = -1  # latest event time (ms)
    buckets: list[list[list[int]]] = msgspec.field(default_factory=_empty_buckets)
    """Per tier (``TIERS``): keys ascending, then counts, amount sums and amount maxima."""
    card_k: list[int] = []  # the cards that used it (idents) ...
    card_t: list[int] = []  # ... and when last (ms), ascending


_decode_state = msgspec.msgpack.Decoder(EntityState).decode
_encode_state = msgspec.msgpack.Encoder().encode


def decode_state(blob: bytes | None) -> EntityState:
    return _decode_state(blob) if blob else EntityState()


def copy_state(state: EntityState) -> EntityState:
    return _decode_state(_encode_state(state))


def entity_step(
    state: EntityState, entity: Entity, time_ms: int, usd: float, card: int
) -> list[float]:
    """Fold one event into the entity's state; its ``entity_names`` features but the card's
    two link counts (``link_step``)."""
    if state.last >= 0 and time_ms <= state.last - f.HISTORY_MS:
        return entity_step(EntityState(), entity, time_ms, usd, card)  # too late: alone
    if state.last >= 0 and time_ms - state.last >= STATE_TTL_MS:  # expired, as in Redis
        empty = EntityState()
        for name in state.__struct_fields__:
            setattr(state, name, getattr(empty, name))
    previous = state.last
    add(state, time_ms, scaled(usd), card)
    row: list[float] = []
    wanted = _wanted(entity)
    for window in entity.windows:
        tier, span = WINDOW_TIER[window]
        keys, counts, sums, maxima = state.buckets[tier]
        top = time_ms // TIERS[tier][0]
        i, j = bisect_right(keys, top - span), bisect_right(keys, top)
        n, total = sum(counts[i:j]), sum(sums[i:j]) / AMOUNT_SCALE
        stats = (float(n), total, total / n if n else 0.0,
                 max(maxima[i:j], default=0) / AMOUNT_SCALE)  # fmt: skip
        row += [stats[k] for k in wanted]
    since_last = (
        max(time_ms - previous, 0) / f.SECOND_MS
        if previous > time_ms - f.HISTORY_MS else f.NO_PREVIOUS_S
    )  # fmt: skip
    times = state.card_t  # ascending
    row += [
        max(time_ms - state.first, 0) / f.SECOND_MS, since_last,
        float(len(times) - bisect_right(times, time_ms - f.DAY_MS)),
        float(len(times) - bisect_right(times, time_ms - f.HISTORY_MS)),
    ]  # fmt: skip
    return row


_STATS: Final = ("count", "sum", "mean", "max")


@cache
def _wanted(entity: Entity) -> tuple[int, ...]:
    return tuple(_STATS.index(stat) for stat in entity.stats)


def scaled(usd: float) -> int:
    return round(usd * AMOUNT_SCALE)


def add(state: EntityState, time_ms: int, amount: int, card: int) -> None:
    """The state change of one event (``models.online.ops``' ``commit_entity`` does the same
    to the stored state, in Lua)."""
    if time_ms > state.last:
        for (width, kept), columns in zip(TIERS, state.buckets, strict=True):
            cut = bisect_right(columns[0], time_ms // width - kept)
            if cut:
                for column in columns:
                    del column[:cut]
        state.last = time_ms
        cut = bisect_right(state.card_t, time_ms - f.HISTORY_MS)
        if cut:
            del state.card_k[:cut], state.card_t[:cut]
    if state.first < 0 or time_ms < state.first:
        state.first = time_ms
    for (width, kept), (keys, counts, sums, maxima) in zip(TIERS, state.buckets, strict=True):
        key = time_ms // width
        if key <= state.last // width - kept:
            continue  # out of this tier's reach
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            counts[i] += 1
            sums[i] += amount
            maxima[i] = max(maxima[i], amount)
        else:
            keys.insert(i, key)
            counts.insert(i, 1)
            sums.insert(i, amount)
            maxima.insert(i, amount)
    _use(state, card, time_ms)


def _use(state: EntityState, card: int, time_ms: int) -> None:
    """Note the card; the cards stay ordered by when last seen (ties: in the order noted),
    and past ``CARDS_KEPT`` the one unseen longest is forgotten."""
    cards, times = state.card_k, state.card_t
    try:
        i = cards.index(card)
    except ValueError:
        i = -1
    if i >= 0:
        if times[i] >= time_ms:
            return
        del cards[i], times[i]
    at = bisect_right(times, time_ms)
    cards.insert(at, card)
    times.insert(at, time_ms)
    if len(cards) > CARDS_KEPT:
        del cards[0], times[0]


def link_step(values: dict[int, int], value: int, time_ms: int) -> list[float]:
    """The card's distinct values of one entity in 24 h and 30 days (this one included)."""
    if values.get(value, -1) < time_ms:
        values[value] = time_ms
    for old in [v for v, seen in values.items() if seen <= time_ms - f.HISTORY_MS]:
        del values[old]
    if len(values) > VALUES_KEPT:
        del values[min(values, key=lambda v: (values[v], v))]
    return [float(sum(seen > time_ms - f.DAY_MS for seen in values.values())),
            float(len(values))]  # fmt: skip


def attribute_row(signals: Signals, tx: Transaction) -> list[float]:
    attributes: Mapping[str, AttributeValue] = tx.attributes or {}
    return [attribute_feature(a, attributes.get(n), tx.event_time_ms)
            for n, a in signals.attributes.items()]  # fmt: skip


def missing_entity(entity: Entity) -> list[float]:
    return [NAN] * len(entity_names(entity))  # the names are cached: this is cheap


def entity_row(
    signals: Signals,
    values: Sequence[str | None],
    time_ms: int,
    usd: float,
    card: int,
    states: Mapping[tuple[str, str], EntityState],
    links: dict[str, dict[int, int]],
) -> list[float]:
    """An event's entity features (``values``: its value of each declared entity, in order),
    folding it into ``states`` (by entity name and value) and the card's ``links``."""
    row: list[float] = []
    for entity, value in zip(signals.entities, values, strict=True):
        if value is None:
            row += missing_entity(entity)
            continue
        row += entity_step(states[(entity.name, value)], entity, time_ms, usd, card)
        row += link_step(links.setdefault(entity.name, {}), value_ident(value), time_ms)
    return row
