"""The entity fold: windows, first and last seen, link counts, bounds, missing values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from models.features import definitions as f
from models.features import entities as en
from models.features import offline
from models.training.datasets import frame_from_transactions
from services.core.contract import Transaction
from services.core.signals import Entity, parse_signals

T0 = 1_772_323_200_000  # a UTC midnight
DEVICE = Entity(by=["device_id"])
NAMES = en.entity_names(DEVICE)


def _row(state: en.EntityState, t: int, usd: float, card: int) -> dict[str, float]:
    return dict(zip(NAMES, en.entity_step(state, DEVICE, t, usd, card), strict=False))


def test_windows_count_sum_mean_and_max_with_the_event_included() -> None:
    state = en.EntityState()
    _row(state, T0, 10.0, 1)
    _row(state, T0 + 30 * f.MINUTE_MS, 30.0, 2)
    row = _row(state, T0 + 3 * f.HOUR_MS, 5.0, 1)
    assert row["ent_device_id_count_1h"] == 1  # the two earlier ones left the hour
    assert row["ent_device_id_count_24h"] == 3
    assert row["ent_device_id_sum_24h"] == 45.0
    assert row["ent_device_id_mean_24h"] == 15.0
    assert row["ent_device_id_max_24h"] == 30.0
    assert row["ent_device_id_first_seen_s"] == 3 * 3600
    assert row["ent_device_id_last_seen_s"] == 3 * 3600 - 30 * 60
    assert row["ent_device_id_cards_24h"] == 2


def test_a_new_entity_has_no_past_and_one_seen_card() -> None:
    row = _row(en.EntityState(), T0, 12.5, 7)
    assert row["ent_device_id_count_30d"] == 1
    assert row["ent_device_id_first_seen_s"] == 0
    assert row["ent_device_id_last_seen_s"] == f.NO_PREVIOUS_S
    assert row["ent_device_id_cards_30d"] == 1


def test_state_stays_bounded_however_long_the_history() -> None:
    state = en.EntityState()
    for i in range(5_000):
        en.entity_step(state, DEVICE, T0 + i * 17 * f.MINUTE_MS, 1.0, i)
    q, h, d = (len(keys) for keys, *_ in state.buckets)
    assert q <= 6
    assert h <= 24
    assert d <= 30
    assert len(state.card_k) == len(state.card_t) == en.CARDS_KEPT


def test_an_event_older_than_the_entitys_month_is_decided_alone_and_not_recorded() -> None:
    state = en.EntityState()
    _row(state, T0 + 40 * f.DAY_MS, 10.0, 1)
    before = en.copy_state(state)
    row = _row(state, T0, 99.0, 2)
    assert row["ent_device_id_count_30d"] == 1
    assert state == before


def test_link_counts_expose_one_card_on_many_values() -> None:
    links: dict[int, int] = {}
    for i in range(20):
        counts = en.link_step(links, i, T0 + i * f.HOUR_MS)
    assert counts == [float(en.VALUES_KEPT), float(en.VALUES_KEPT)]  # capped, still large
    assert en.link_step(links, 99, T0 + 40 * f.DAY_MS) == [1.0, 1.0]  # the old ones expired


def _tx(i: int, device: str | None, attributes: dict[str, object] | None = None) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}", event_time=T0 + i * 1000, card_id=f"c{i % 3}", customer_id="u",
        merchant_id="m", merchant_category="5411", amount=10.0 + i, currency="USD",
        country="US", channel="ecommerce", device_id=device,
        attributes=attributes,  # type: ignore[arg-type]
    )  # fmt: skip


def test_offline_attribute_features_match_the_per_event_ones() -> None:
    signals = parse_signals("""
attributes:
  bin: {type: category}
  score: {type: number}
  ok: {type: boolean}
  opened: {type: timestamp}
entities: [{by: [device_id]}, {by: [bin, device_id]}]
""")
    txs = [
        _tx(0, "d1", {"bin": "411111", "score": 3.5, "ok": True, "opened": T0 - 86_400_000}),
        _tx(1, None, {"bin": "411111", "opened": "2026-02-28T00:00:00Z"}),
        _tx(2, "d1", None),
        _tx(3, "d2", {"ok": False, "score": 0}),
    ]
    frame = offline.compute(frame_from_transactions(txs, signals), signals)
    for i, tx in enumerate(txs):
        expected = en.attribute_row(signals, tx)
        got = frame.iloc[i][list(en.attribute_names(signals))].tolist()
        assert np.allclose(got, expected, equal_nan=True), (i, got, expected)
    assert frame.iloc[0]["attr_opened_age_s"] == 86_400
    assert math.isnan(frame.iloc[2]["attr_bin"])
    # Missing entity values: NaN features, and no state (the next d1 event sees one before).
    assert math.isnan(frame.iloc[1]["ent_device_id_count_1h"])
    assert frame.iloc[2]["ent_device_id_count_1h"] == 2
    assert math.isnan(frame.iloc[2]["ent_bin_device_id_count_1h"])
    assert pd.notna(frame.iloc[0]["ent_bin_device_id_count_1h"])


def test_a_category_code_is_stable_and_exact_in_float32() -> None:
    code = en.category_code("gmail.com")
    assert code == en.category_code("gmail.com")
    assert float(np.float32(code)) == code
    assert code != en.category_code("yahoo.com")


def test_a_timestamp_the_signals_file_accepts_has_its_age_online_and_offline() -> None:
    """An account opened in 1998 is a valid timestamp (1900..2100); its age is a feature."""
    signals = parse_signals("attributes: {opened: {type: timestamp}}")
    tx = _tx(0, "d1", {"opened": "1998-06-01T00:00:00Z"})
    assert signals.check(tx) is None
    (age,) = en.attribute_row(signals, tx)
    frame = offline.compute(frame_from_transactions([tx], signals), signals)
    assert age == frame.iloc[0]["attr_opened_age_s"] > 27 * 365 * 86_400
