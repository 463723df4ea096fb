"""Features over declared entities and declared attributes: one fold, online and offline.

An entity is the value of one or two fields of a transaction (an e-mail domain, a device, a
BIN and e-mail domain pair: ``services.core.signals.Entity``). Per entity value the fold keeps
bounded state: amounts in 10-minute buckets over the last hour, hour buckets over 24 h and day
buckets over 30 days (count, sum and max, amounts in integer micro-dollars so that Redis and
Python add them exactly alike), when it was first and last seen, and the cards that used it
(at most ``CARDS_KEPT``, the longest unseen forgotten first). Per card and entity, the values
the card used (at most ``VALUES_KEPT``). The features of an event, with the event included:

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from models import features as f
from services.core.contract import AttributeValue, Transaction, parse_event_time
from services.core.signals import Attribute, Entity, Signals

MICRO: Final = 1_000_000
CARDS_KEPT: Final = 64
VALUES_KEPT: Final = 16
TEN_MINUTES_MS: Final = 10 * f.MINUTE_MS
TIERS: Final = (("q", TEN_MINUTES_MS, 6), ("h", f.HOUR_MS, 24), ("d", f.DAY_MS, 30))
"""Bucket tiers: (field prefix, width ms, buckets kept)."""
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
        at = parse_event_time(value) if isinstance(value, (int, str)) else event_time_ms
        return (event_time_ms - at) / f.SECOND_MS
    return float(value)


def attribute_names(signals: Signals) -> tuple[str, ...]:
    return tuple(
        f"attr_{name}_age_s" if a.type == "timestamp" else f"attr_{name}"
        for name, a in signals.attributes.items()
    )


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
        parts.append(str(value))
    return SEPARATOR.join(parts)


_CONTRACT_FIELDS: Final = frozenset(Transaction.__struct_fields__)


def value_digest(value: str) -> str:
    """What names an entity value in a Redis key: never the raw value."""
    return hashlib.blake2b(value.encode(), digest_size=12).hexdigest()


def value_ident(value: str) -> int:
    return zlib.crc32(value.encode())


@dataclass
class EntityState:
    """One entity value's state, field for field what its Redis hash holds."""

    first: int = -1
    last: int = -1
    buckets: tuple[dict[int, list[int]], ...] = field(default_factory=lambda: ({}, {}, {}))
    cards: dict[int, int] = field(default_factory=dict)  # card ident -> last seen (ms)

    @classmethod
    def of_redis(cls, fields: Sequence[bytes], cards: Sequence[bytes]) -> EntityState:
        """From ``HGETALL`` of the hash and ``ZRANGE ... WITHSCORES`` of the cards, flat."""
        state = cls()
        tiers = {prefix: i for i, (prefix, _, _) in enumerate(TIERS)}
        for name, value in zip(fields[0::2], fields[1::2], strict=True):
            key = name.decode()
            if key == "first":
                state.first = int(value)
            elif key == "last":
                state.last = int(value)
            else:
                n, s, m = value.split(b":")
                state.buckets[tiers[key[0]]][int(key[1:])] = [int(n), int(s), int(m)]
        for card, seen in zip(cards[0::2], cards[1::2], strict=True):
            state.cards[int(card)] = int(float(seen))
        return state


def copy_state(state: EntityState) -> EntityState:
    return EntityState(state.first, state.last,
                       tuple({k: list(v) for k, v in tier.items()} for tier in state.buckets),
                       dict(state.cards))  # fmt: skip


def entity_step(
    state: EntityState, entity: Entity, time_ms: int, usd: float, card: int
) -> list[float]:
    """Fold one event into the entity's state; its ``entity_names`` features but the card's
    two link counts (``link_step``)."""
    if state.last >= 0 and time_ms <= state.last - f.HISTORY_MS:
        return entity_step(EntityState(), entity, time_ms, usd, card)  # too late: alone
    previous = state.last
    add(state, time_ms, micro(usd), card)
    row: list[float] = []
    for w in entity.windows:
        tier, span = WINDOW_TIER[w]
        width = TIERS[tier][1]
        top = time_ms // width
        n = s = m = 0
        for key in range(top - span + 1, top + 1):
            bucket = state.buckets[tier].get(key)
            if bucket is not None:
                n, s, m = n + bucket[0], s + bucket[1], max(m, bucket[2])
        values = {"count": float(n), "sum": s / MICRO, "mean": s / MICRO / n if n else 0.0,
                  "max": m / MICRO}  # fmt: skip
        row += [values[stat] for stat in entity.stats]
    since_last = (
        max(time_ms - previous, 0) / f.SECOND_MS
        if previous > time_ms - f.HISTORY_MS else f.NO_PREVIOUS_S
    )  # fmt: skip
    row += [
        max(time_ms - state.first, 0) / f.SECOND_MS, since_last,
        float(sum(seen > time_ms - f.DAY_MS for seen in state.cards.values())),
        float(sum(seen > time_ms - f.HISTORY_MS for seen in state.cards.values())),
    ]  # fmt: skip
    return row


def micro(usd: float) -> int:
    return round(usd * MICRO)


def add(state: EntityState, time_ms: int, amount: int, card: int) -> None:
    """The state change of one event (``models.redis_ops``' ``commit_entity`` does the same
    to the Redis hash)."""
    if time_ms > state.last:
        for tier, (_, width, kept) in enumerate(TIERS):
            stale = time_ms // width - kept
            buckets = state.buckets[tier]
            for key in [k for k in buckets if k <= stale]:
                del buckets[key]
        state.last = time_ms
        for card_ident in [c for c, seen in state.cards.items() if seen <= time_ms - f.HISTORY_MS]:
            del state.cards[card_ident]
    if state.first < 0 or time_ms < state.first:
        state.first = time_ms
    for tier, (_, width, kept) in enumerate(TIERS):
        key = time_ms // width
        if key <= state.last // width - kept:
            continue  # out of this tier's reach
        bucket = state.buckets[tier].setdefault(key, [0, 0, 0])
        bucket[0] += 1
        bucket[1] += amount
        bucket[2] = max(bucket[2], amount)
    if state.cards.get(card, -1) < time_ms:
        state.cards[card] = time_ms
    if len(state.cards) > CARDS_KEPT:
        del state.cards[min(state.cards, key=lambda c: (state.cards[c], str(c)))]  # as Redis


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
    return [NAN] * len(entity_names(entity))


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
