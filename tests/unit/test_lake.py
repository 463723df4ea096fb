"""The lake on a real directory and DuckDB: once-only appends, date partitions, compaction."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from models import errors
from models.lake import tables as lk
from services.clients.produce import generated_items
from services.core.contract import Decision, LabelRecord, Transaction
from services.generator import GeneratorConfig

DAY_MS = 24 * 3600 * 1000


def _transactions(count: int) -> list[Transaction]:
    return [item.transaction for item in generated_items(GeneratorConfig(seed=5), count)]


def _sourced(txs: list[Transaction], first_offset: int = 0) -> list[lk.Sourced]:
    return [lk.Sourced("transactions", i % 2, first_offset + i, lk.transaction_row(tx))
            for i, tx in enumerate(txs)]  # fmt: skip


def _count(lake: lk.Lake, sql: str) -> int:
    row = lk.connect(lake).execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_replayed_after_a_crash_is_not_written_twice(tmp_path: Path) -> None:
    lake = lk.Lake(tmp_path)
    txs = _transactions(300)
    records = _sourced(txs)
    lake.append("transactions", records[:200])
    assert lake.append("transactions", records[100:]).rows == 100  # 100..199 were written
    assert lake.append("transactions", records[:200]) == (0, 0)
    assert lake.rows("transactions") == 300
    assert _count(lake, "SELECT count(*) FROM transactions_all") == 300
    assert _count(lake, "SELECT count(DISTINCT transaction_id) FROM transactions") == 300


def test_offsets_of_another_topic_incarnation_are_not_trusted(tmp_path: Path) -> None:
    """A broker that came back empty restarts at offset 0: same offsets, a new epoch."""
    lake = lk.Lake(tmp_path)
    txs = _transactions(200)
    old = [dataclasses.replace(r, epoch="topic-id-1") for r in _sourced(txs[:100])]
    new = [dataclasses.replace(r, epoch="topic-id-2") for r in _sourced(txs[100:])]
    assert lake.append("transactions", old).rows == 100
    assert lake.next_offset("transactions", "transactions", 0, "topic-id-2") is None
    assert lake.append("transactions", new).rows == 100  # offsets 0..99 again, all written
    assert lake.append("transactions", new).rows == 0  # and once only within the epoch
    assert lake.next_offset("transactions", "transactions", 1, "topic-id-1") == 100


def test_rows_are_partitioned_by_the_date_of_their_event(tmp_path: Path) -> None:
    lake = lk.Lake(tmp_path)
    txs = _transactions(2)
    late = Transaction(
        **{**lk.transaction_row(txs[1]), "event_time": txs[0].event_time_ms + DAY_MS}
    )
    lake.append("transactions", _sourced([txs[0], late]))
    dates = sorted(p.parent.name for p in lake.files("transactions"))
    assert len(dates) == 2
    assert dates[0] < dates[1]
    connection = lk.connect(lake)
    rows = connection.execute("SELECT date, event_time FROM transactions ORDER BY 2").fetchall()
    assert [f"date={d}" for d, _ in rows] == dates


def test_compaction_merges_small_files_and_keeps_every_row_once(tmp_path: Path) -> None:
    lake = lk.Lake(tmp_path)
    txs = _transactions(500)
    for start in range(0, 500, 50):
        lake.append("transactions", _sourced(txs[start : start + 50], start))
    before = _count(lake, "SELECT count(*) FROM transactions_all")
    files_before = len(lake.files("transactions"))

    report = lake.compact("transactions")

    assert before == 500
    assert report.files_in == files_before > report.files_out
    assert len(lake.files("transactions")) == report.files_out
    assert _count(lake, "SELECT count(*) FROM transactions_all") == 500
    assert lake.append("transactions", _sourced(txs)).rows == 0  # offsets survive compaction
    # The replaced files stay on disk for readers that listed them, until the grace ends.
    on_disk = list(tmp_path.glob("transactions/date=*/*.parquet"))
    assert len(on_disk) == files_before + report.files_out


def test_compacting_again_changes_nothing(tmp_path: Path) -> None:
    lake = lk.Lake(tmp_path)
    txs = _transactions(100)
    lake.append("transactions", _sourced(txs[:50]))
    lake.append("transactions", _sourced(txs[50:], 50))
    assert lake.compact("transactions").files_out >= 1
    files = lake.files("transactions")
    assert lake.compact("transactions").files_in == 0
    assert lake.files("transactions") == files
    assert _count(lake, "SELECT count(*) FROM transactions_all") == 100


def _label(tx: Transaction, label: str, analyst: str, at: int, **more: object) -> LabelRecord:
    return LabelRecord(
        transaction_id=tx.transaction_id, label=label, analyst=analyst, labelled_at=at,  # type: ignore[arg-type]
        event_time=tx.event_time_ms, card_id=tx.card_id, customer_id=tx.customer_id,
        merchant_id=tx.merchant_id, device_id=tx.device_id, **more,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_latest_label_of_a_transaction_wins_with_its_decision(tmp_path: Path) -> None:
    lake = lk.Lake(tmp_path)
    tx = _transactions(1)[0]
    first = _label(tx, "legit", "a", tx.event_time_ms + 1_000)
    second = _label(tx, "fraud", "b", tx.event_time_ms + DAY_MS, alerted=True, score=0.93,
                    model_version="v0007", decision="decline")  # fmt: skip
    lake.append("labels", [lk.Sourced("labels", 0, i, lk.label_row(r))
                           for i, r in enumerate([first, second])])  # fmt: skip
    row = (
        lk.connect(lake)
        .execute("SELECT label, analyst, score, model_version, merchant_id, alerted FROM labels")
        .fetchall()
    )
    assert row == [("fraud", "b", 0.93, "v0007", tx.merchant_id, True)]


def test_files_of_an_earlier_schema_are_read_by_column_name(tmp_path: Path) -> None:
    """A labels file of the schema before (features, amount; no ``alerted``) stays readable
    beside new ones, by DuckDB and by compaction."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = lk.Lake(tmp_path)
    tx = _transactions(1)[0]
    record = _label(tx, "legit", "a", tx.event_time_ms)
    lake.append("labels", [lk.Sourced("labels", 0, 0, lk.label_row(record))])
    old = pa.table({
        "transaction_id": ["t-old"], "label": ["fraud"], "analyst": ["z"],
        "labelled_at": [tx.event_time_ms], "amount": [9.5], "count_1m": [2.0],
    })  # fmt: skip
    folder = tmp_path / "labels" / f"date={lk._date(tx.event_time_ms)}"
    pq.write_table(old, folder / "part-old.parquet")
    with lake._committing("labels") as manifest:
        manifest.files[f"{folder.name}/part-old.parquet"] = 1
    rows = lk.connect(lake).execute("SELECT transaction_id, alerted FROM labels_all").fetchall()
    assert sorted(rows, key=str) == sorted([("t-old", None), (tx.transaction_id, False)], key=str)
    assert lake.compact("labels", target_rows=10).files_in == 2
    assert _count(lake, "SELECT count(*) FROM labels_all") == 2


def test_a_transaction_is_found_in_the_archive_with_its_decision(tmp_path: Path) -> None:
    """What a disposition of a transaction never alerted is applied to (a chargeback)."""
    lake = lk.Lake(tmp_path)
    txs = _transactions(20)
    lake.append("transactions", _sourced(txs))
    decided = Decision(transaction_id=txs[4].transaction_id, card_id=txs[4].card_id,
                       event_time=txs[4].event_time_ms, decided_at=txs[4].event_time_ms + 9,
                       score=0.01, decision="approve", reasons=[], model_version="v3")  # fmt: skip
    lake.append("decisions", [lk.Sourced("decisions", 0, 0, lk.decision_row(decided))])
    wanted = [txs[4].transaction_id, txs[7].transaction_id, "no-such"]
    found = lk.find_transactions(lake, wanted, txs[0].event_time_ms, txs[-1].event_time_ms)
    assert set(found) == {txs[4].transaction_id, txs[7].transaction_id}
    assert (found[txs[4].transaction_id]["decision"], found[txs[7].transaction_id]["decision"]) == (
        "approve", None)  # fmt: skip
    assert found[txs[4].transaction_id]["card_id"] == txs[4].card_id
    later = txs[-1].event_time_ms + 2 * DAY_MS  # days before it: not searched
    assert lk.find_transactions(lake, wanted, later, later + DAY_MS) == {}
    before = txs[0].event_time_ms - 3 * DAY_MS
    assert lk.find_transactions(lake, wanted, before, before + DAY_MS) == {}


def test_an_empty_lake_answers_queries(tmp_path: Path) -> None:
    for table in lk.TABLES:
        assert _count(lk.Lake(tmp_path), f"SELECT count(*) FROM {table}") == 0


def test_a_corrupt_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "_manifest.json").write_text("{not json")
    with pytest.raises(errors.LakeError, match=r"labels/_manifest\.json is not a lake manifest"):
        lk.Lake(tmp_path).files("labels")


def test_the_lake_trains_with_analysts_labels_and_unlabelled_rows_as_legit(tmp_path: Path) -> None:
    from models.training import datasets

    lake = lk.Lake(tmp_path)
    txs = _transactions(50)
    lake.append("transactions", _sourced(txs))
    when = txs[3].event_time_ms + 5_000
    fraud = _label(txs[3], "fraud", "a", when)
    lake.append("labels", [lk.Sourced("labels", 0, 0, lk.label_row(fraud))])

    frame = datasets.load(tmp_path).frame.set_index("transaction_id")

    assert len(frame) == 50
    assert frame["is_fraud"].sum() == 1
    assert frame.loc[txs[3].transaction_id, "is_fraud"]
    assert frame.loc[txs[3].transaction_id, "label_time"] == when
    assert frame["label_time"].isna().sum() == 49  # no label: counts in no merchant's labels


def test_a_directory_that_is_no_lake_is_a_clear_error(tmp_path: Path) -> None:
    from models.training import datasets

    with pytest.raises(errors.DataError, match="not a lake, or an empty one"):
        datasets.load(tmp_path)


class _RacedLake(lk.Lake):
    """Another process compacts the same table while this one writes its merged file."""

    raced = False

    def _write_file(self, table: lk.Table, date: str, rows: object) -> str:
        if not self.raced:
            self.raced = True
            lk.Lake(self.root).compact(table)
        return super()._write_file(table, date, rows)


def test_a_compaction_that_lost_a_race_changes_nothing(tmp_path: Path) -> None:
    txs = _transactions(100)
    lk.Lake(tmp_path).append("transactions", _sourced(txs[:50]))
    lk.Lake(tmp_path).append("transactions", _sourced(txs[50:], 50))
    raced = _RacedLake(tmp_path)

    report = raced.compact("transactions")

    assert report.files_out == 0
    assert len(report.skipped) == 1
    assert len(raced.files("transactions")) == 1  # the winner's file
    assert _count(raced, "SELECT count(*) FROM transactions_all") == 100
    on_disk = list(tmp_path.glob("transactions/date=*/*.parquet"))
    assert len(on_disk) == 3  # two retired inputs and the winner's; the loser's was removed


def test_compaction_removes_old_files_no_manifest_names(tmp_path: Path) -> None:
    lake = lk.Lake(tmp_path)
    lake.append("transactions", _sourced(_transactions(10)))
    kept = lake.files("transactions")[0]
    crashed = kept.with_name("part-crashed-before-commit.parquet")
    fresh = kept.with_name("part-being-written.parquet")
    for orphan in (crashed, fresh):
        orphan.write_bytes(kept.read_bytes())
    hour_ago = time.time() - 3600
    os.utime(crashed, (hour_ago, hour_ago))

    report = lake.compact("transactions")

    assert report.deleted == 1
    assert not crashed.exists()
    assert fresh.exists()  # a writer may be about to commit it
    assert kept.exists()
    assert _count(lake, "SELECT count(*) FROM transactions_all") == 10


def test_declared_attributes_are_kept_and_trained_on_from_the_lake(tmp_path: Path) -> None:
    """Attributes go to the lake as JSON text (each producer declares its own) and come back
    as the signals file's columns."""
    from models.features import offline
    from models.training import datasets
    from services.generator.signals import generated_signals

    signals = generated_signals()
    config = GeneratorConfig(seed=6, customers=300, fraud_rate=0.05, attributes=True)
    items = list(generated_items(config, 3_000))
    lake = lk.Lake(tmp_path)
    lake.append("transactions", _sourced([i.transaction for i in items]))
    frauds = [i.transaction for i in items if i.is_fraud]
    lake.append("labels", [lk.Sourced("labels", 0, n, lk.label_row(_label(tx, "fraud", "a",
                tx.event_time_ms + DAY_MS))) for n, tx in enumerate(frauds)])  # fmt: skip
    loaded = datasets.load(tmp_path, signals=signals)
    by_id = loaded.frame.set_index("transaction_id")
    for item in items[:200]:
        attributes = item.transaction.attributes or {}
        row = by_id.loc[item.transaction.transaction_id]
        for name in ("card_bin", "email_domain", "three_ds"):
            stored = row[offline.attribute_column(name)]
            assert (stored if stored == stored else None) == attributes.get(name)
    assert int(loaded.frame["is_fraud"].sum()) == len(frauds)
    assert list(loaded.feature_names)[-1].startswith("card_")  # the signals' features too
