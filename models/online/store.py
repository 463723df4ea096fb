"""The online feature path: per event, each card's bounded state in Redis, for the stream job.

Per batch, two round trips whatever the cards' history lengths (``models.online.ops`` packs a
batch's operations into one script call per node or slot):
1. read, per card, its state, which of the batch's ids it has already counted, and whether it
   is blocklisted; per device its blocklist entry; per merchant and day the counts its
   windows need;
2. fold every event with ``models.features.fold.step``, then write back, per card, its state
   (with its latest features) and the ids counted together (atomic), and per merchant its day
   counts.

A transaction id already counted never counts twice. Its repeat is decided with the very row
it was first decided with while Redis keeps that row: for ``replay_horizon_s`` of the job's
clock after it was counted (what a restart replays was counted shortly before the crash), at
most ``REPLAY_ROWS`` per card. An older repeat is decided again on a copy of the card's state.

Merchant windows end more than a week ago, so each worker keeps the ones it read for
``merchant_cache_s`` (a label on a week-old transaction shows within that time).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import msgspec

from models.features import definitions as f
from models.features import entities as en
from models.features.fold import (
    MERCHANT_DAYS_BACK,
    NO_MERCHANT_HISTORY,
    CardEvent,
    CardState,
    ident,
    merchant_features,
    merchant_last_day,
    step,
)
from models.online import layout
from models.online.ops import Op, run
from services.core.contract import Transaction
from services.core.currency import to_usd
from services.core.settings import RedisClient
from services.core.signals import EMPTY, Signals

CARD_TTL_MS: Final = f.HISTORY_MS + f.DAY_MS
MERCHANT_REACH_DAYS: Final = MERCHANT_DAYS_BACK + f.MERCHANT_DELAY_DAYS + 1
MERCHANT_TTL_MS: Final = (MERCHANT_REACH_DAYS + 1) * f.DAY_MS
_MERCHANT_FIELDS_CAP: Final = 2 * (MERCHANT_REACH_DAYS + 2)  # then stale days are deleted
_WINDOWS_KEPT: Final = 200_000  # merchant windows a worker remembers before starting afresh
_encode = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(CardState).decode
_decode_row = msgspec.msgpack.Decoder(list[float]).decode
REPLAY_ROWS: Final = 64  # per card, the most rows kept for replays (the hour ring's cap too)
ENTITY_SEEN_CAP: Final = 4096  # per entity value, ids remembered within the replay horizon
ENTITY_SEEN_MIN_MS: Final = 60_000  # ... and at least this long (a horizon of 0 included)
ENTITY_CHUNK: Final = 500  # events of one entity value per script operation (Lua's stack)


def event_of(tx: Transaction) -> CardEvent:
    """What the fold reads of a transaction."""
    return CardEvent(
        tx.event_time_ms, to_usd(tx.amount, tx.currency), ident(tx.merchant_id), tx.country,
        ident(tx.device_id) if tx.device_id is not None else None, tx.lat, tx.lon,
        tx.merchant_category, tx.channel,
    )  # fmt: skip


def without_history(tx: Transaction, signals: Signals = EMPTY) -> list[float]:
    """The features of an event decided with nothing known (Redis unavailable)."""
    event = event_of(tx)
    row = step(CardState(), event, NO_MERCHANT_HISTORY)
    if signals is EMPTY:
        return row
    states: dict[tuple[str, str], en.EntityState] = defaultdict(en.EntityState)
    values = [en.entity_value(e, tx) for e in signals.entities]
    return (row + en.attribute_row(signals, tx)
            + en.entity_row(signals, values, event.time, event.usd, 0, states, {}))  # fmt: skip


@dataclass(frozen=True)
class Looked:
    """A batch's features (``FEATURE_NAMES`` order) and what else Redis said of each event."""

    rows: list[list[float]]
    card_blocked: list[bool]
    device_blocked: list[bool]


@dataclass
class _Card:
    indexes: list[int]
    state: CardState
    counted: list[bool]  # per index: its id is already in the card's seen-set
    blocked: bool
    day_before: int  # the day of the card's latest event before this batch
    kept: list[list[float] | None]  # per index: the row its id was first decided with, if kept
    new: list[tuple[int, bytes, int]] = field(default_factory=list)  # (score, digest, index)
    again: list[int] = field(default_factory=list)  # repeats decided again, on a copy


def _merchant_day(tx: Transaction) -> tuple[str, int]:
    return tx.merchant_id, merchant_last_day(tx.event_time_ms // f.DAY_MS)


class OnlineFeatureStore:
    """Card states, seen ids and merchant day counts in Redis; features for batches of events."""

    def __init__(
        self, client: RedisClient, merchant_cache_s: float = 60.0, replay_horizon_s: float = 300.0,
        signals: Signals = EMPTY,
    ) -> None:  # fmt: skip
        self._redis = client
        self._cache_s = merchant_cache_s
        self._horizon_ms = int(replay_horizon_s * 1000)
        self._windows: dict[tuple[str, int], tuple[float, list[float]]] = {}
        self._signals = signals
        self._names = f.FEATURE_NAMES + en.signal_feature_names(signals)

    def update(self, batch: Sequence[Transaction], now_ms: int | None = None) -> Looked:
        """Record each event once and return its features; events of a card apply in batch
        order, so a later event sees the earlier. ``now_ms``: the job's clock (wall clock)."""
        if not batch:
            return Looked([], [], [])
        digests = [layout.transaction_digest(tx.transaction_id) for tx in batch]
        by_card: dict[str, list[int]] = {}
        for i, tx in enumerate(batch):
            by_card.setdefault(tx.card_id, []).append(i)
        devices = sorted({tx.device_id for tx in batch if tx.device_id})
        windows, missing = self._cached_windows(batch)
        declared = self._signals.entities
        values = [[en.entity_value(e, tx) for e in declared] for tx in batch]
        entities = {
            (e.name, v): layout.entity_keys(e.name, en.value_digest(v))
            for row in values for e, v in zip(declared, row, strict=True) if v
        }  # fmt: skip
        reads = _reads(by_card, digests, devices, missing)
        reads += [Op("get", keys[:1]) for keys in entities.values()]
        replies = run(self._redis, reads)
        cards = [_card(i, reply) for i, reply in zip(by_card.values(), replies, strict=False)]
        rest = replies[len(cards) :]
        blocked_devices = {d for d, r in zip(devices, rest, strict=False) if r}
        rest = rest[len(devices) :]
        windows |= self._read_windows(missing, rest[: len(missing)])
        rows = _fold(batch, digests, cards, windows, len(self._names))
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        commits = []
        if self._signals is not EMPTY:
            replies = rest[len(missing) :]
            states = {k: en.decode_state(r) for k, r in zip(entities, replies, strict=True)}
            changes = self._fold_signals(batch, digests, values, cards, rows, states)
            commits = self._entity_commits(entities, changes, now_ms)
        commits += _commits(batch, rows, cards, _Replays(now_ms, self._horizon_ms))
        run(self._redis, commits)
        card_blocked = dict.fromkeys((i for c in cards if c.blocked for i in c.indexes), True)
        return Looked(
            rows, [card_blocked.get(i, False) for i in range(len(batch))],
            [tx.device_id in blocked_devices for tx in batch],
        )  # fmt: skip

    def _fold_signals(
        self,
        batch: Sequence[Transaction],
        digests: list[bytes],
        values: list[list[str | None]],
        cards: list[_Card],
        rows: list[list[float]],
        states: dict[tuple[str, str], en.EntityState],
    ) -> dict[tuple[str, str], list[tuple[str, int, int, int]]]:
        """Attribute and entity features of the batch's events, in batch order: the new ones
        folded into the entities' states (and returned per entity, to be written before the
        cards: a crash in between replays the events, and each entity counts them once), a
        repeat decided again on copies."""
        signals = self._signals
        new = {i: card for card in cards for _, _, i in card.new}
        again = {i: card for card in cards for i in card.again}
        events: dict[tuple[str, str], list[tuple[str, int, int, int]]] = {}
        folded: set[bytes] = set()  # one id under two cards of the batch counts once here too
        for i, tx in enumerate(batch):
            card = new.get(i) or again.get(i)
            if card is None:
                continue  # a repeat decided with its kept row
            event, card_ident = event_of(tx), ident(tx.card_id)
            if i in new and digests[i] not in folded:
                folded.add(digests[i])
                entity_states, links = states, card.state.links
                change = (digests[i].hex(), event.time, en.scaled(event.usd), card_ident)
                for e, value in zip(signals.entities, values[i], strict=True):
                    if value is not None:
                        events.setdefault((e.name, value), []).append(change)
            else:  # decided again on copies of what it reads
                entity_states = {(e.name, v): en.copy_state(states[(e.name, v)])
                                 for e, v in zip(signals.entities, values[i], strict=True)
                                 if v is not None}  # fmt: skip
                links = {k: dict(v) for k, v in card.state.links.items()}
            entity_row = en.entity_row(
                signals, values[i], event.time, event.usd, card_ident, entity_states, links
            )
            rows[i] += en.attribute_row(signals, tx) + entity_row
        return events

    def _entity_commits(
        self,
        keys: dict[tuple[str, str], tuple[str, str]],
        changes: dict[tuple[str, str], list[tuple[str, int, int, int]]],
        now_ms: int,
    ) -> list[Op]:
        """Each entity value's events, a chunk per operation, its ids kept for the replay
        horizon (at least a minute) and no longer."""
        kept_ms = max(self._horizon_ms, ENTITY_SEEN_MIN_MS)
        return [Op("commit_entity", keys[key], (en.STATE_TTL_MS, now_ms, now_ms - kept_ms,
                   ENTITY_SEEN_CAP, en.CARDS_KEPT, kept_ms + ENTITY_SEEN_MIN_MS,
                   _encode(events[i : i + ENTITY_CHUNK])))
                for key, events in changes.items()
                for i in range(0, len(events), ENTITY_CHUNK)]  # fmt: skip

    def _cached_windows(
        self, batch: Sequence[Transaction]
    ) -> tuple[dict[tuple[str, int], list[float]], list[tuple[str, int]]]:
        """The merchant windows this worker holds for the batch, and those it must read."""
        now, found, missing = time.monotonic(), {}, []
        for key in sorted({_merchant_day(tx) for tx in batch}):
            hit = self._windows.get(key)
            if hit is not None and hit[0] > now:
                found[key] = hit[1]
            else:
                missing.append(key)
        return found, missing

    def _read_windows(
        self, keys: list[tuple[str, int]], replies: Sequence[list[bytes | None]]
    ) -> dict[tuple[str, int], list[float]]:
        """Merchant windows from their day counts (``merchant_days`` replies); kept a while."""
        expires = time.monotonic() + self._cache_s
        if len(self._windows) > _WINDOWS_KEPT:
            self._windows.clear()
        read = {}
        for key, reply in zip(keys, replies, strict=True):
            read[key] = merchant_features([int(n or 0) for n in reply[0::2]],
                                          [int(x or 0) for x in reply[1::2]])  # fmt: skip
            if self._cache_s > 0:
                self._windows[key] = (expires, read[key])
        return read

    def snapshot(self, card_id: str) -> dict[str, float | int | str] | None:
        """The card's latest features with the event time and id they were computed for."""
        raw = self._redis.get(layout.card_state(card_id))
        latest = _decode_state(raw).latest_features if isinstance(raw, bytes) else None
        if latest is None:
            return None
        event_time, transaction_id, row = latest
        named: dict[str, float | int | str] = dict(zip(self._names, row, strict=False))
        return named | {"event_time": event_time, "transaction_id": transaction_id}

    def record_label(
        self, transaction_id: str, merchant_id: str, event_time_ms: int, is_fraud: bool
    ) -> bool:
        """Count a confirmed label (see :func:`label_op`); False if nothing changed."""
        op = label_op(transaction_id, merchant_id, event_time_ms, is_fraud)
        return bool(run(self._redis, [op])[0] == LABEL_CHANGED)


LABEL_CHANGED, LABEL_REPEATED, LABEL_SUPERSEDED = 1, 0, -1  # what ``label_op`` replies


def label_op(
    transaction_id: str, merchant_id: str, event_time_ms: int, is_fraud: bool,
    labelled_at_ms: int = 0,
) -> Op:  # fmt: skip
    """Count a confirmed label on the merchant's day. The transaction's latest label wins, by
    the disposition's time, whatever order dispositions are applied in (a ``legit`` after a
    ``fraud`` takes the fraud back; an older one than the label counted changes nothing)."""
    keys = (layout.merchant_label(merchant_id, transaction_id), layout.merchant_days(merchant_id))
    label = "fraud" if is_fraud else "legit"
    args = (label, f"f{event_time_ms // f.DAY_MS}", MERCHANT_TTL_MS, labelled_at_ms)
    return Op("record_label", keys, args)


def delete_if_op(key: str, value: str) -> Op:
    """Delete ``key`` if it still holds ``value`` (what one transaction's label created)."""
    return Op("delete_if", (key,), (value,))


def _reads(
    by_card: dict[str, list[int]],
    digests: list[bytes],
    devices: list[str],
    merchant_days: list[tuple[str, int]],
) -> list[Op]:
    ops = [Op("read_card", (layout.card_state(card), layout.card_seen(card),
                            layout.blocklist_card(card), layout.card_recent(card)),
              tuple(digests[i] for i in indexes))
           for card, indexes in by_card.items()]  # fmt: skip
    ops += [Op("exists", (layout.blocklist_device(d),)) for d in devices]
    ops += [Op("merchant_days", (layout.merchant_days(m),), (day, MERCHANT_DAYS_BACK))
            for m, day in merchant_days]  # fmt: skip
    return ops


def _card(indexes: list[int], reply: list[Any]) -> _Card:
    blob, scores, blocked, rows = reply
    state = _decode_state(blob) if blob else CardState()
    counted = [score is not None for score in scores]
    kept = [_decode_row(row) if row else None for row in rows]
    return _Card(indexes, state, counted, bool(blocked), state.latest // f.DAY_MS, kept)


def _fold(
    batch: Sequence[Transaction],
    digests: list[bytes],
    cards: list[_Card],
    windows: dict[tuple[str, int], list[float]],
    width: int,
) -> list[list[float]]:
    """The card features of each event (the whole row of a repeat whose first row is kept,
    when it has ``width`` features: the layout has not changed since)."""
    rows: list[list[float]] = [[] for _ in batch]
    for card in cards:
        counting: dict[bytes, list[float]] = {}  # ids counted in this batch: their rows
        for i, counted, kept in zip(card.indexes, card.counted, card.kept, strict=True):
            repeated = counted or digests[i] in counting
            first = counting.get(digests[i]) or (kept if kept and len(kept) == width else None)
            if first is not None:  # a repeat: decided exactly as the first time
                rows[i] = first
                continue
            state = _decode_state(_encode(card.state)) if repeated else card.state
            rows[i] = step(state, event_of(batch[i]), windows[_merchant_day(batch[i])])
            if not repeated:
                counting[digests[i]] = rows[i]
                card.new.append((card.state.latest, digests[i], i))
            else:
                card.again.append(i)
    return rows


class _Replays(NamedTuple):
    """When rows are kept and for how long: the job's clock and the replay horizon (ms)."""

    now_ms: int
    horizon_ms: int

    def renew(
        self, state: CardState, new: list[tuple[int, bytes, int]]
    ) -> tuple[set[bytes], list[bytes]]:
        """Update the card's list of kept rows: the digests it keeps, and those it drops."""
        since = self.now_ms - self.horizon_ms
        before = state.recent
        kept = [(d, t) for d, t in before if t > since] + [(d, self.now_ms) for _, d, _ in new]
        state.recent = kept[-REPLAY_ROWS:] if self.horizon_ms > 0 else []
        keeping = {d for d, _ in state.recent}
        return keeping, [d for d, _ in before if d not in keeping]


def _commits(
    batch: Sequence[Transaction], rows: list[list[float]], cards: list[_Card], replays: _Replays
) -> list[Op]:
    """Per card with news, its state, ids, latest features and replay rows; per merchant, its
    counts."""
    ops: list[Op] = []
    counts: dict[str, dict[int, int]] = {}
    for card in cards:
        if not card.new:
            continue
        last = card.indexes[-1]
        card_id = batch[last].card_id
        keys = (layout.card_state(card_id), layout.card_seen(card_id), layout.card_recent(card_id))
        pairs = [item for score, digest, _ in card.new for item in (score, digest)]
        new_day = card.state.latest // f.DAY_MS != card.day_before
        trim = card.state.latest - f.HISTORY_MS if new_day else ""
        state = card.state
        state.latest_features = (batch[last].event_time_ms, batch[last].transaction_id, rows[last])
        keeping, forget = replays.renew(state, card.new)
        keep = [item for _, digest, i in card.new if digest in keeping
                for item in (digest, _encode(rows[i]))]  # fmt: skip
        args = (CARD_TTL_MS, trim, _encode(state), replays.horizon_ms, len(keep) // 2, *keep,
                len(forget), *forget, *pairs)  # fmt: skip
        ops.append(Op("commit_card", keys, args))
        for _, _, i in card.new:
            per_day = counts.setdefault(batch[i].merchant_id, {})
            day = batch[i].event_time_ms // f.DAY_MS
            per_day[day] = per_day.get(day, 0) + 1
    for merchant, per_day in counts.items():
        oldest = max(per_day) - MERCHANT_REACH_DAYS
        pairs = [item for day, n in per_day.items() for item in (day, n)]
        ops.append(Op("count_merchant", (layout.merchant_days(merchant),),
                      (MERCHANT_TTL_MS, oldest, _MERCHANT_FIELDS_CAP, *pairs)))  # fmt: skip
    return ops


def card_view(client: RedisClient, names: Sequence[str]) -> dict[str, Any]:
    """What Redis holds for a card known by ``names`` (its token first): the name it is kept
    under, its latest features, how many transactions its history counted, who blocked it,
    and analysts' labels of its transactions."""
    card_id = next((n for n in names if client.exists(*layout.card_keys(n))), names[0])
    blocked: bytes | None = client.get(layout.blocklist_card(card_id))  # type: ignore[assignment]
    labels: dict[bytes, bytes] = client.hgetall(layout.card_labels(card_id))  # type: ignore[assignment]
    return {
        "card_id": card_id,
        "features": OnlineFeatureStore(client).snapshot(card_id),
        "counted_transactions": client.zcard(layout.card_seen(card_id)),
        "blocklisted_by": blocked.decode() if blocked else None,
        "labels": {k.decode(): v.decode() for k, v in labels.items()},
    }
