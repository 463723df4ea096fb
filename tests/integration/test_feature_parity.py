"""The online features (per event, state in Redis) equal the offline ones on every row."""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
import redis

from models.features import offline
from models.features.definitions import DAY_MS, FEATURE_NAMES, LABEL_DELAY_MS
from models.features.entities import serving_names, signal_feature_names
from models.online.store import OnlineFeatureStore
from models.training.datasets import frame_from_transactions
from services.core.contract import Transaction
from services.core.signals import parse_signals
from services.generator import GeneratorConfig, generate
from services.generator.signals import generated_signals

pytestmark = pytest.mark.integration
BATCH = 64


@pytest.fixture(scope="module")
def history() -> tuple[list[Transaction], dict[str, bool]]:
    # Few customers over weeks of event time: long card histories, every pattern present.
    items = list(generate(GeneratorConfig(seed=21, customers=400, fraud_rate=0.03), 25_000))
    return [i.transaction for i in items], {i.transaction.transaction_id: i.is_fraud for i in items}


@pytest.fixture
def store(redis_url: str) -> Iterator[OnlineFeatureStore]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield OnlineFeatureStore(client)
    client.close()


def _replay(
    store: OnlineFeatureStore, transactions: list[Transaction], fraud: dict[str, bool]
) -> dict[str, list[float]]:
    """Events in (time, id) order, each label recorded LABEL_DELAY_MS after its event."""
    events = sorted(transactions, key=lambda tx: (tx.event_time_ms, tx.transaction_id))
    labels = [(tx.event_time_ms + LABEL_DELAY_MS, 0, tx) for tx in events]  # 0: before events
    merged = heapq.merge(labels, [(tx.event_time_ms, 1, tx) for tx in events],
                         key=lambda item: (item[0], item[1]))  # fmt: skip
    rows: dict[str, list[float]] = {}
    batch: list[Transaction] = []

    def flush() -> None:
        rows.update(zip((tx.transaction_id for tx in batch), store.update(batch).rows,
                        strict=True))  # fmt: skip
        batch.clear()

    for _, kind, tx in merged:
        if kind == 1:
            batch.append(tx)
            if len(batch) == BATCH:
                flush()
        else:
            flush()
            store.record_label(
                tx.transaction_id, tx.merchant_id, tx.event_time_ms, fraud[tx.transaction_id]
            )
    flush()
    return rows


def test_online_equals_offline_for_every_feature_of_every_row(
    store: OnlineFeatureStore, history: tuple[list[Transaction], dict[str, bool]]
) -> None:
    transactions, fraud = history
    frame = frame_from_transactions(transactions)
    frame["is_fraud"] = frame["transaction_id"].map(fraud)
    frame["label_time"] = frame["event_time"] + LABEL_DELAY_MS
    expected = offline.compute(frame)
    online = _replay(store, transactions, fraud)
    actual = pd.DataFrame([online[t] for t in frame["transaction_id"]], columns=FEATURE_NAMES)

    for name in FEATURE_NAMES:
        a, e = actual[name].to_numpy(), expected[name].to_numpy(np.float64)
        close = np.isclose(a, e, rtol=1e-6, atol=1e-9)
        if not close.all():
            row = int(np.flatnonzero(~close)[0])
            pytest.fail(
                f"feature {name}: {int((~close).sum())} rows differ, first "
                f"{frame['transaction_id'][row]}: online {a[row]!r} offline {e[row]!r}"
            )
    # The data exercises every feature: none is constant over 25,000 rows.
    assert [n for n in FEATURE_NAMES if expected[n].nunique() < 2] == []


def test_the_latest_label_of_a_transaction_wins(
    store: OnlineFeatureStore, history: tuple[list[Transaction], dict[str, bool]], redis_url: str
) -> None:
    store = OnlineFeatureStore(redis.Redis.from_url(redis_url), merchant_cache_s=0)  # read anew
    transactions = sorted(history[0][:3_000], key=lambda t: (t.event_time_ms, t.transaction_id))
    store.update(transactions)
    tx = transactions[0]
    risk = FEATURE_NAMES.index("merchant_risk_30d")
    later = msgspec.structs.replace(
        tx, transaction_id="probe", event_time=tx.event_time_ms + 10 * DAY_MS
    )

    def merchant_risk() -> float:
        probe = msgspec.structs.replace(later, transaction_id=f"probe-{time.monotonic_ns()}")
        return store.update([probe]).rows[0][risk]

    clean = merchant_risk()
    assert store.record_label(tx.transaction_id, tx.merchant_id, tx.event_time_ms, True) is True
    assert store.record_label(tx.transaction_id, tx.merchant_id, tx.event_time_ms, True) is False
    flagged = merchant_risk()
    assert flagged > clean
    assert store.record_label(tx.transaction_id, tx.merchant_id, tx.event_time_ms, False) is True
    assert merchant_risk() == clean  # the legit that followed took the fraud back


def test_latest_features_are_stored_with_their_event_time(
    store: OnlineFeatureStore, history: tuple[list[Transaction], dict[str, bool]]
) -> None:
    batch = sorted(history[0][:200], key=lambda t: (t.event_time_ms, t.transaction_id))
    rows = store.update(batch).rows
    last = batch[-1]
    stored = store.snapshot(last.card_id)
    assert stored is not None
    assert stored["event_time"] == last.event_time_ms
    assert stored["transaction_id"] == last.transaction_id
    assert float(stored["amount_usd"]) == pytest.approx(rows[-1][0])


@pytest.fixture(scope="module")
def with_attributes() -> tuple[list[Transaction], dict[str, bool]]:
    """Generated events with the generator's attributes: every declared entity exercised,
    fraud rings and BIN attacks included."""
    config = GeneratorConfig(seed=23, customers=600, fraud_rate=0.03, attributes=True)
    items = list(generate(config, 12_000))
    return [i.transaction for i in items], {i.transaction.transaction_id: i.is_fraud for i in items}


def test_declared_attribute_and_entity_features_are_the_same_online_and_offline(
    redis_url: str, with_attributes: tuple[list[Transaction], dict[str, bool]]
) -> None:
    signals = generated_signals()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = OnlineFeatureStore(client, signals=signals)
    transactions, fraud = with_attributes
    frame = frame_from_transactions(transactions, signals)
    frame["is_fraud"] = frame["transaction_id"].map(fraud)
    frame["label_time"] = frame["event_time"] + LABEL_DELAY_MS
    expected = offline.compute(frame, signals)
    online = _replay(store, transactions, fraud)
    names = list(serving_names(signals))
    actual = pd.DataFrame([online[t] for t in frame["transaction_id"]], columns=names)
    added = signal_feature_names(signals)
    assert list(expected.columns) == names
    assert len(added) == 10 + 4 * 22
    for name in names:
        a, e = actual[name].to_numpy(), expected[name].to_numpy(np.float64)
        close = np.isclose(a, e, rtol=1e-6, atol=1e-9, equal_nan=True)
        if not close.all():
            row = int(np.flatnonzero(~close)[0])
            pytest.fail(
                f"feature {name}: {int((~close).sum())} rows differ, first "
                f"{frame['transaction_id'][row]}: online {a[row]!r} offline {e[row]!r}"
            )
    # Not vacuous: every added feature varies (but the BINs of a card: a card has one), and
    # a BIN attack's BIN links many new cards.
    constant = [n for n in added if expected[n].nunique() < 2]
    assert constant == ["card_card_bin_24h", "card_card_bin_30d"]
    assert expected["ent_card_bin_cards_24h"].max() >= 10
    # No raw value names a key: an entity's key holds a digest of its value, never the value.
    keys = [k.decode() for k in client.scan_iter("fs:v3:{e:*", count=1000)]
    assert len(keys) > 1000
    named = re.compile(r"fs:v3:\{e:[a-z_]+\.[0-9a-f]{24}\}:(state|seen)")
    assert [k for k in keys if not named.fullmatch(k)] == []


def _entity_states(client: redis.Redis) -> dict[bytes, Any]:
    return {k: client.get(k) for k in client.scan_iter("fs:v3:{e:*:state", count=1000)}


def test_a_replay_after_a_crash_between_entity_and_card_writes_counts_once(
    redis_url: str, with_attributes: tuple[list[Transaction], dict[str, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A worker that dies after the entities counted a batch and before its cards did: the
    replay counts the batch in the cards, and the entities still once."""
    signals = generated_signals()
    client = redis.Redis.from_url(redis_url)
    events = sorted(with_attributes[0][:2_000], key=lambda t: (t.event_time_ms, t.transaction_id))
    client.flushdb()
    reference = OnlineFeatureStore(client, signals=signals)
    for i in range(0, len(events), BATCH):
        reference.update(events[i : i + BATCH])
    once = _entity_states(client)
    client.flushdb()
    crashed = OnlineFeatureStore(client, signals=signals)
    for i in range(0, len(events), BATCH):
        batch = events[i : i + BATCH]
        if i == 10 * BATCH:
            with monkeypatch.context() as patched:  # the card writes never happen
                patched.setattr("models.online.store._commits", lambda *_args: [])
                crashed.update(batch)
        crashed.update(batch)
        if i == 10 * BATCH:
            crashed.update(batch)  # and a second replay changes nothing either
    assert _entity_states(client) == once
    assert len(once) > 100


def test_a_batch_of_one_hot_entity_value_is_folded_in_chunks(redis_url: str) -> None:
    """5,000 events of one e-mail domain in one batch: beyond what one Lua call unpacks."""
    signals = parse_signals("attributes: {domain: {type: category}}\nentities: [{by: [domain]}]")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = OnlineFeatureStore(client, signals=signals)
    base = 1_772_323_200_000
    batch = [Transaction(
        transaction_id=f"hot-{i}", event_time=base + i * 10, card_id=f"c{i % 97}",
        customer_id="u", merchant_id="m", merchant_category="5411", amount=1.0,
        currency="USD", country="US", channel="ecommerce", attributes={"domain": "hot.example"},
    ) for i in range(5_000)]  # fmt: skip
    rows = store.update(batch).rows
    count = serving_names(signals).index("ent_domain_count_1h")
    assert rows[-1][count] == 5_000
    probe = msgspec.structs.replace(batch[0], transaction_id="probe", event_time=base + 60_000)
    assert store.update([probe]).rows[0][count] == 5_001  # every one of them was stored
