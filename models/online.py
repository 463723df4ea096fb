"""The online feature path: per event, each card's bounded state in Redis, for the stream job.

Per batch, two pipelined round trips whatever the cards' history lengths:
1. read, per card, one script (its state, which of the batch's ids it has counted, whether it
   is blocklisted), per device its blocklist entry and per merchant its day counts;
2. fold every event with ``models.fold.step`` and write back, per card, one script that stores
   the state, the ids counted and the latest features together (one slot, atomic), then per
   merchant its transaction counts.

Every key of one script shares a hash tag, so the same commands run on one Redis or spread over
a Redis Cluster (redis-py's cluster pipeline sends each node its share). A transaction id
already counted is decided again on a copy of its card's state, so that it never counts twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import redis

from models import features as f
from models import redis_layout as layout
from models.fold import NO_MERCHANT_HISTORY, CardEvent, CardState, ident, merchant_features, step
from services.core.contract import Transaction
from services.core.currency import to_usd
from services.core.settings import RedisClient

_READ_CARD: Final = """
-- KEYS: state, seen, blocked. ARGV: digests of the batch's transaction ids of this card.
return {redis.call('GET', KEYS[1]), redis.call('ZMSCORE', KEYS[2], unpack(ARGV)),
        redis.call('EXISTS', KEYS[3])}
"""
_COMMIT_CARD: Final = """
-- KEYS: state, seen, features. ARGV: TTL, the seen score at or below which ids go, the state,
-- the features, then (score, digest) per newly counted transaction.
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[1])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', unpack(ARGV, 5))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""
_RECORD_LABEL: Final = """
-- KEYS: the transaction's label marker, its merchant's days. ARGV: label, fraud field, TTL.
local old = redis.call('GET', KEYS[1])
if old == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if ARGV[1] == 'fraud' then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
elseif old == 'fraud' then
  redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
_DELETE_IF: Final = """
-- KEYS: a key. ARGV: the value it must hold to be deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_SCRIPTS: Final = {src: hashlib.sha1(src.encode()).hexdigest()
                   for src in (_READ_CARD, _COMMIT_CARD, _RECORD_LABEL, _DELETE_IF)}  # fmt: skip
CARD_TTL_MS: Final = f.HISTORY_MS + f.DAY_MS
MERCHANT_REACH_DAYS: Final = max(f.MERCHANT_DAYS) + f.MERCHANT_DELAY_DAYS + 1
MERCHANT_TTL_MS: Final = (MERCHANT_REACH_DAYS + 1) * f.DAY_MS
_encode_state = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(CardState).decode
_json = msgspec.json.Encoder().encode
Command = tuple[Any, ...]


def event_of(tx: Transaction) -> CardEvent:
    """What the fold reads of a transaction."""
    return CardEvent(
        tx.event_time_ms, to_usd(tx.amount, tx.currency), ident(tx.merchant_id), tx.country,
        ident(tx.device_id) if tx.device_id is not None else None, tx.lat, tx.lon,
        tx.merchant_category, tx.channel,
    )  # fmt: skip


def without_history(tx: Transaction) -> list[float]:
    """The features of an event decided with nothing known (Redis unavailable)."""
    return step(CardState(), event_of(tx), NO_MERCHANT_HISTORY)


@dataclass(frozen=True)
class Looked:
    """A batch's features (``FEATURE_NAMES`` order) and what else Redis said of each event."""

    rows: list[list[float]]
    card_blocked: list[bool]
    device_blocked: list[bool]
    repeated: list[bool]  # the transaction id was counted before: decided, not counted again


@dataclass
class _Card:
    indexes: list[int]
    state: CardState
    counted: list[bool]  # per index: its id is in the card's seen-set
    new: list[tuple[int, bytes, int]]  # (seen score, digest, index) of the ids counted now


class OnlineFeatureStore:
    """Card states, seen ids and merchant day counts in Redis; features for batches of events."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client

    def update(self, batch: Sequence[Transaction]) -> Looked:
        """Record each event once and return its features; events of a card apply in batch
        order, so a later event sees the earlier."""
        if not batch:
            return Looked([], [], [], [])
        digests = [layout.transaction_digest(tx.transaction_id) for tx in batch]
        by_card: dict[str, list[int]] = {}
        for i, tx in enumerate(batch):
            by_card.setdefault(tx.card_id, []).append(i)
        devices = sorted({tx.device_id for tx in batch if tx.device_id})
        merchants = sorted({tx.merchant_id for tx in batch})
        reads: list[Command] = [
            _script(_READ_CARD, layout.card_state(card), layout.card_seen(card),
                    layout.blocklist_card(card), *(digests[i] for i in indexes))
            for card, indexes in by_card.items()
        ]  # fmt: skip
        reads += [("EXISTS", layout.blocklist_device(d)) for d in devices]
        reads += [("HGETALL", layout.merchant_days(m)) for m in merchants]
        replies = self._execute(reads)
        cards = [_card(indexes, reply) for indexes, reply in zip(by_card.values(), replies)]
        device_blocked = dict(zip(devices, replies[len(cards) :], strict=False))
        days = dict(zip(merchants, (_days(r) for r in replies[len(cards) + len(devices) :]),
                        strict=True))  # fmt: skip
        rows, repeated = self._fold(batch, digests, cards, days)
        blocked_cards = [False] * len(batch)
        for card, reply in zip(cards, replies, strict=False):
            for i in card.indexes:
                blocked_cards[i] = bool(reply[2])
        self._execute(self._commits(batch, rows, cards, days))
        return Looked(
            rows, blocked_cards,
            [bool(tx.device_id) and bool(device_blocked.get(tx.device_id)) for tx in batch],
            repeated,
        )  # fmt: skip

    def _fold(
        self,
        batch: Sequence[Transaction],
        digests: list[bytes],
        cards: list[_Card],
        days: dict[str, tuple[dict[int, int], dict[int, int]]],
    ) -> tuple[list[list[float]], list[bool]]:
        rows: list[list[float]] = [[] for _ in batch]
        repeated = [False] * len(batch)
        merchant_rows: dict[tuple[str, int], list[float]] = {}
        for card in cards:
            counting: set[bytes] = set()
            for i, counted in zip(card.indexes, card.counted, strict=True):
                tx, event = batch[i], event_of(batch[i])
                key = (tx.merchant_id, event.time // f.DAY_MS)
                if key not in merchant_rows:
                    merchant_rows[key] = merchant_features(*days[tx.merchant_id], key[1])
                repeated[i] = counted or digests[i] in counting
                state = _copy(card.state) if repeated[i] else card.state
                rows[i] = step(state, event, merchant_rows[key])
                if not repeated[i]:
                    counting.add(digests[i])
                    card.new.append((card.state.latest, digests[i], i))
        return rows, repeated

    def _commits(
        self,
        batch: Sequence[Transaction],
        rows: list[list[float]],
        cards: list[_Card],
        days: dict[str, tuple[dict[int, int], dict[int, int]]],
    ) -> list[Command]:
        """Per card with news, its state, ids and latest features; per merchant, its counts."""
        commands: list[Command] = []
        counts: dict[str, dict[int, int]] = {}
        for card in cards:
            if not card.new:
                continue
            last = batch[card.indexes[-1]]
            pairs = [item for score, digest, _ in card.new for item in (score, digest)]
            commands.append(_script(
                _COMMIT_CARD, layout.card_state(last.card_id), layout.card_seen(last.card_id),
                layout.card_features(last.card_id), CARD_TTL_MS,
                card.state.latest - f.HISTORY_MS, _encode_state(card.state),
                snapshot(last, rows[card.indexes[-1]]), *pairs,
            ))  # fmt: skip
            for _, _, i in card.new:
                per_day = counts.setdefault(batch[i].merchant_id, {})
                day = batch[i].event_time_ms // f.DAY_MS
                per_day[day] = per_day.get(day, 0) + 1
        for merchant, per_day in counts.items():
            key = layout.merchant_days(merchant)
            for day, n in per_day.items():
                commands.append(("HINCRBY", key, f"n{day}", n))
            horizon = max(per_day) - MERCHANT_REACH_DAYS
            stale = [f"{k}{d}" for k in "nf" for d in _known_days(days[merchant]) if d < horizon]
            if stale:
                commands.append(("HDEL", key, *stale))
            commands.append(("PEXPIRE", key, MERCHANT_TTL_MS))
        return commands

    def snapshot(self, card_id: str) -> dict[str, float | int | str] | None:
        """The card's latest features with the event time and id they were computed for."""
        raw = self._redis.get(layout.card_features(card_id))
        return msgspec.json.decode(raw) if isinstance(raw, bytes) else None

    def record_label(
        self, transaction_id: str, merchant_id: str, event_time_ms: int, is_fraud: bool
    ) -> bool:
        """Count a confirmed label for the merchant's day; the transaction's latest label wins
        (a ``legit`` after a ``fraud`` takes the fraud back). False if nothing changed."""
        label = "fraud" if is_fraud else "legit"
        command = _script(
            _RECORD_LABEL, layout.merchant_label(merchant_id, transaction_id),
            layout.merchant_days(merchant_id), label, f"f{event_time_ms // f.DAY_MS}",
            MERCHANT_TTL_MS,
        )  # fmt: skip
        return bool(self._execute([command])[0])

    def delete_if(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Delete each key that still holds its value; how many were deleted."""
        return sum(self._execute([_script(_DELETE_IF, key, value) for key, value in pairs]))

    def _execute(self, commands: list[Command]) -> list[Any]:
        """Run ``commands`` in one pipeline; scripts a node does not know (restarted, failed
        over) are loaded and run again. Raises the first error otherwise."""
        replies = self._pipeline(commands)
        missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if missing:
            for source in _SCRIPTS:
                self._redis.script_load(source)
            for i, reply in zip(missing, self._pipeline([commands[i] for i in missing]),
                                strict=True):  # fmt: skip
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _pipeline(self, commands: list[Command]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))


def snapshot(tx: Transaction, row: list[float]) -> bytes:
    """A card's latest features as analysts read them: with their event time and id."""
    named = dict(zip(f.FEATURE_NAMES, row, strict=True))
    return _json(named | {"event_time": tx.event_time_ms, "transaction_id": tx.transaction_id})


def _script(source: str, *keys_then_args: Any) -> Command:
    keys = {_READ_CARD: 3, _COMMIT_CARD: 3, _RECORD_LABEL: 2, _DELETE_IF: 1}[source]
    return ("EVALSHA", _SCRIPTS[source], keys, *keys_then_args)


def _card(indexes: list[int], reply: list[Any]) -> _Card:
    blob, scores, _ = reply
    state = _decode_state(blob) if blob else CardState()
    return _Card(indexes, state, [score is not None for score in scores], [])


def _copy(state: CardState) -> CardState:
    return _decode_state(_encode_state(state))


def _days(reply: dict[bytes, bytes]) -> tuple[dict[int, int], dict[int, int]]:
    """A merchant's day counts: (transactions by day, confirmed frauds by day)."""
    transactions: dict[int, int] = {}
    frauds: dict[int, int] = {}
    for field, value in reply.items():
        kind, day = field[:1], int(field[1:])
        (transactions if kind == b"n" else frauds)[day] = int(value)
    return transactions, frauds


def _known_days(days: tuple[dict[int, int], dict[int, int]]) -> set[int]:
    return set(days[0]) | set(days[1])
