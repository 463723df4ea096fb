"""A card's history survives hostile event times and replays (the Decider, a real Redis).

Each test compares a card's features after a disturbed stream with those after the clean one.
"""

from __future__ import annotations

import time

import msgspec
import redis

from models.features import definitions as f
from models.online import layout
from models.online.store import REPLAY_ROWS, OnlineFeatureStore
from models.training.registry import DEFAULT_REGISTRY, Registry
from services.core.contract import DeadLetter, Decision, Transaction, encode
from services.scoring.server.inprocess import InProcessScorer
from stream_jobs.decide import Decider, Output, Record

T0 = 1_772_323_200_000  # 2026-03-01


def _tx(i: int, **changes: object) -> Transaction:
    fields = {
        "transaction_id": f"t{i}", "event_time": T0 + i * 60_000, "card_id": "c1",
        "customer_id": "u1", "merchant_id": "m1", "merchant_category": "5411",
        "amount": 20.0 + i, "currency": "USD", "country": "US", "channel": "card_present",
    } | changes  # fmt: skip
    return Transaction(**fields)  # type: ignore[arg-type]


def _record(tx: Transaction, offset: int) -> Record:
    return Record(tx.card_id.encode(), encode(tx), 0, offset, tx.event_time_ms)


class _Card:
    """A fresh Redis with a Decider, and the card's features after each stream."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.client.flushdb()
        registry = Registry(DEFAULT_REGISTRY)
        scorer = InProcessScorer(registry.path(registry.current() or ""))
        self.decider = Decider(self.client, scorer)
        self.offset = 0

    def send(self, *txs: Transaction) -> list[Output]:
        records = [_record(tx, self.offset + i) for i, tx in enumerate(txs)]
        self.offset += len(txs)
        return self.decider.decide(records)

    def features(self) -> dict[str, float | int | str] | None:
        return OnlineFeatureStore(self.client).snapshot("c1")


def _verdict(output: Output) -> tuple[str, float, list[str]]:
    decision = msgspec.json.decode(output.decision or b"", type=Decision)
    return decision.decision, decision.score, decision.reasons


def _clean(redis_url: str) -> dict[str, float | int | str] | None:
    card = _Card(redis_url)
    card.send(*(_tx(i) for i in range(5)))
    card.send(_tx(5))
    return card.features()


def test_a_future_dated_event_is_a_dead_letter_and_cannot_erase_the_history(
    redis_url: str,
) -> None:
    expected = _clean(redis_url)
    card = _Card(redis_url)
    card.send(*(_tx(i) for i in range(5)))
    now = int(time.time() * 1000)
    outputs = card.send(
        _tx(90, event_time=now + f.DAY_MS), _tx(91, event_time=now + 400 * f.DAY_MS)
    )
    letters = [msgspec.json.decode(o.dead_letter or b"", type=DeadLetter) for o in outputs]
    assert [(d.kind, d.field) for d in letters] == [("event_time_future", "event_time")] * 2
    assert all(o.decision is None for o in outputs)
    card.send(_tx(5))
    assert card.features() == expected
    assert expected is not None
    assert expected["count_30d"] == 6


def test_an_event_slightly_ahead_of_the_clock_is_decided(redis_url: str) -> None:
    """The negative control: the limit refuses only what is beyond it."""
    card = _Card(redis_url)
    ahead = _tx(1, event_time=int(time.time() * 1000) + 60_000)
    [output] = card.send(ahead)
    assert output.decision is not None
    assert output.dead_letter is None


def test_a_replay_or_a_resend_with_changed_fields_never_counts_twice(redis_url: str) -> None:
    expected = _clean(redis_url)
    card = _Card(redis_url)
    first = [_tx(i) for i in range(5)]
    original = card.send(*first)
    replayed = card.send(*first)  # the same records again, as after a restart
    assert [_verdict(o) for o in replayed] == [_verdict(o) for o in original]  # decided alike
    changed = _tx(2, amount=999.0, event_time=T0 + 5_000, merchant_id="m9", country="FR")
    resent = card.send(changed, changed)
    assert all(o.decision is not None for o in replayed + resent)  # decided, never dropped
    card.send(_tx(5))
    assert card.features() == expected
    assert card.client.zcard(layout.card_seen("c1")) == 6
    day = T0 // f.DAY_MS
    assert card.client.hget(layout.merchant_days("m1"), f"n{day}") == b"6"
    assert not card.client.exists(layout.merchant_days("m9"))


def test_a_new_transaction_id_with_the_same_fields_does_count(redis_url: str) -> None:
    """The negative control: what differs only by id is a new transaction."""
    card = _Card(redis_url)
    card.send(*(_tx(i) for i in range(5)))
    card.send(_tx(2, transaction_id="t2-other"))
    card.send(_tx(5))
    features = card.features()
    assert features is not None
    assert features["count_30d"] == 7


def test_a_replayed_burst_gets_the_rows_it_was_decided_with_within_the_horizon(
    redis_url: str,
) -> None:
    """What a restart replays was counted shortly before the crash, however many events of
    one card that is (a card-testing burst): up to ``REPLAY_ROWS`` per card, within the
    horizon of the job's clock, the repeat is decided with the very same features."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = OnlineFeatureStore(client, replay_horizon_s=300)
    burst = [_tx(i) for i in range(REPLAY_ROWS + 16)]
    first = [row for at in range(0, len(burst), 10)
             for row in store.update(burst[at : at + 10], now_ms=T0 + at).rows]  # fmt: skip
    kept = slice(len(burst) - REPLAY_ROWS, None)
    again = store.update(burst[kept], now_ms=T0 + 299_000).rows
    assert again == first[kept]
    # Negative controls: beyond the cap, or past the horizon, the repeat is decided anew.
    older = store.update(burst[:16], now_ms=T0 + 299_000).rows
    assert all(row != original for row, original in zip(older, first, strict=False))
    assert client.zcard(layout.card_seen("c1")) == len(burst)  # and nothing counted twice
    assert client.hlen(layout.card_recent("c1")) == REPLAY_ROWS
    store.update([_tx(len(burst))], now_ms=T0 + 301_000)  # the card's next event, past it
    assert client.hlen(layout.card_recent("c1")) == 1
