"""A card's timeline from a real lake (Parquet files, DuckDB): the card's transactions of the
range only, newest first, with the decision acted on, the latest label, and markers where a
device or a country is new for the card against the lookback before the range."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import LakeError
from models.lake import tables as lk
from services.core.contract import Decision, LabelRecord, Transaction
from services.workbench.timeline import card_timeline, cards_sharing_a_device

DAY_MS = 86_400_000
START = 1_780_000_000_000  # 2026-05-28


def _tx(i: int, day: float, card: str = "tok-a", device: str | None = "dev-1",
        country: str = "DE") -> Transaction:  # fmt: skip
    return Transaction(
        transaction_id=f"t{i}", event_time=START + int(day * DAY_MS), card_id=card,
        customer_id="c1", merchant_id=f"m{i}", merchant_category="5411", amount=10.0 + i,
        currency="EUR", country=country, channel="card_present", device_id=device,
    )  # fmt: skip


def _lake(tmp_path: Path, txs: list[Transaction]) -> lk.Lake:
    lake = lk.Lake(tmp_path)
    lake.append("transactions", [lk.Sourced("transactions", 0, i, lk.transaction_row(tx))
                                 for i, tx in enumerate(txs)])  # fmt: skip
    return lake


def _decide(lake: lk.Lake, tx: Transaction, outcome: str, offset: int) -> None:
    decision = Decision(transaction_id=tx.transaction_id, card_id=tx.card_id,
                        event_time=tx.event_time_ms, decided_at=tx.event_time_ms + 40,
                        score=0.9, decision=outcome, reasons=["velocity_burst"],  # type: ignore[arg-type]
                        model_version="v1")  # fmt: skip
    lake.append("decisions", [lk.Sourced("decisions", 0, offset, lk.decision_row(decision))])


def test_the_range_newest_first_with_decisions_labels_and_new_markers(tmp_path: Path) -> None:
    history = [_tx(0, 0), _tx(1, 40, country="FR")]  # before the range: the lookback
    shown = [
        _tx(2, 50),  # known device and country
        _tx(3, 55, device="dev-2"),  # a new device
        _tx(4, 60, country="FR"),  # France was seen in the lookback: not new
        _tx(5, 62, country="BR", device=None),  # a new country, no device
    ]
    other_card = [_tx(6, 61, card="tok-b", device="dev-9", country="US")]
    later = [_tx(7, 80)]  # after the range's end
    lake = _lake(tmp_path, [*history, *shown, *other_card, *later])
    _decide(lake, shown[1], "review", 0)
    record = LabelRecord(transaction_id="t3", label="fraud", analyst="ana",
                         labelled_at=START + 56 * DAY_MS, event_time=shown[1].event_time_ms,
                         card_id="tok-a", customer_id="c1", merchant_id="m3")  # fmt: skip
    lake.append("labels", [lk.Sourced("labels", 0, 0, lk.label_row(record))])

    entries = card_timeline(lake, "tok-a", START + 45 * DAY_MS, START + 70 * DAY_MS)

    assert [e.transaction_id for e in entries] == ["t5", "t4", "t3", "t2"]
    by_id = {e.transaction_id: e for e in entries}
    assert [t for t, e in by_id.items() if e.new_device] == ["t3"]
    assert [t for t, e in by_id.items() if e.new_country] == ["t5"]
    assert (by_id["t3"].decision, by_id["t3"].reasons, by_id["t3"].label) == (
        "review",
        ["velocity_burst"],
        "fraud",
    )
    assert by_id["t2"].decision is None
    assert by_id["t2"].label is None


def test_a_card_first_seen_in_the_range_has_no_new_marker_on_its_first_use(
    tmp_path: Path,
) -> None:
    lake = _lake(tmp_path, [_tx(0, 10), _tx(1, 11, device="dev-2")])
    entries = card_timeline(lake, "tok-a", START, START + 20 * DAY_MS)
    assert [(e.transaction_id, e.new_device, e.new_country) for e in entries] == [
        ("t1", True, False), ("t0", False, False)
    ]  # fmt: skip


def test_an_empty_lake_is_an_empty_timeline_and_a_broken_file_an_error(tmp_path: Path) -> None:
    assert card_timeline(lk.Lake(tmp_path / "none"), "tok-a", START, START + DAY_MS) == []
    lake = _lake(tmp_path / "lake", [_tx(0, 0)])
    (part,) = lake.files("transactions")
    part.write_bytes(b"not parquet")
    with pytest.raises(LakeError, match="the lake"):
        card_timeline(lake, "tok-a", START - DAY_MS, START + DAY_MS)


def test_the_card_is_matched_exactly_not_as_a_pattern(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_tx(0, 0, card="tok-a"), _tx(1, 0, card="tok-ab")])
    found = card_timeline(lake, "tok-a%", START - DAY_MS, START + DAY_MS)
    assert found == []
    assert [e.transaction_id for e in card_timeline(lake, "tok-a", START - DAY_MS,
                                                    START + DAY_MS)] == ["t0"]  # fmt: skip


def test_cards_sharing_a_device_in_the_range_most_shared_first(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [
        _tx(0, 10, card="tok-a", device="dev-1"), _tx(1, 11, card="tok-a", device="dev-2"),
        _tx(2, 12, card="tok-b", device="dev-1"), _tx(3, 13, card="tok-b", device="dev-2"),
        _tx(4, 12, card="tok-c", device="dev-2"),
        _tx(5, 12, card="tok-d", device="dev-9"),  # another device: not related
        _tx(6, 40, card="tok-e", device="dev-1"),  # the same device, outside the range
        _tx(7, 12, card="tok-f", device=None),  # no device
    ])  # fmt: skip
    found = cards_sharing_a_device(lake, "tok-a", START, START + 20 * DAY_MS)
    assert found == ["tok-b", "tok-c"]
    assert cards_sharing_a_device(lake, "tok-f", START, START + 20 * DAY_MS) == []
