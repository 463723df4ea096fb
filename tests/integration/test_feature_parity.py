"""The online features (per event, Redis) equal the offline ones (vectorised) on every row."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import redis

from models import offline
from models.datasets import frame_from_transactions
from models.features import FEATURE_NAMES, LABEL_DELAY_MS
from models.online import OnlineFeatureStore
from services.core.contract import Transaction
from services.generator import GeneratorConfig, generate

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
        rows.update(zip((tx.transaction_id for tx in batch), store.update(batch), strict=True))
        batch.clear()

    for _, kind, tx in merged:
        if kind == 1:
            batch.append(tx)
            if len(batch) == BATCH:
                flush()
        else:
            flush()
            store.record_label(tx.transaction_id, tx.merchant_id, fraud[tx.transaction_id])
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


def test_replayed_events_and_labels_count_once(
    store: OnlineFeatureStore, history: tuple[list[Transaction], dict[str, bool]]
) -> None:
    transactions = sorted(history[0][:3_000], key=lambda t: (t.event_time_ms, t.transaction_id))
    first = store.update(transactions)
    again = store.update(transactions)  # a replay after a crash: same ids, same features
    assert again == first
    tx = transactions[0]
    assert store.record_label(tx.transaction_id, tx.merchant_id, True) is True
    assert store.record_label(tx.transaction_id, tx.merchant_id, True) is False
    after = store.update([tx])[0]
    rate = after[FEATURE_NAMES.index("merchant_fraud_rate")]
    assert rate == pytest.approx((1 + 0.005 * 50) / (1 + 50))


def test_latest_features_are_stored_with_their_event_time(
    store: OnlineFeatureStore, history: tuple[list[Transaction], dict[str, bool]]
) -> None:
    batch = sorted(history[0][:200], key=lambda t: (t.event_time_ms, t.transaction_id))
    rows = store.update(batch)
    store.write_snapshots(batch, rows)
    last = batch[-1]
    stored = store.snapshot(last.card_id)
    assert stored is not None
    assert stored["event_time"] == last.event_time_ms
    assert stored["transaction_id"] == last.transaction_id
    assert float(stored["amount_usd"]) == pytest.approx(rows[-1][0])
