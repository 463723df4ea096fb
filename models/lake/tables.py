"""The data lake: Parquet tables partitioned by date, committed through a manifest.

``LAKE/{table}/date=YYYY-MM-DD/part-{uuid}.parquet`` holds the rows; ``LAKE/{table}/
_manifest.json`` lists the files that make up the table and, per Kafka partition, the last
offset written. A file becomes part of the table only when a new manifest naming it replaces
the old one (``os.replace`` under a lock), so no reader sees a partial file, a compaction
never shows its input and output together, and a batch replayed after a crash is skipped by
its offsets instead of being written twice.

Tables: ``transactions`` and ``decisions`` (the raw zone: everything the stream saw and
decided) and ``labels`` (each analyst disposition as applied, a ``LabelRecord``: the
transaction's ids and time, and what was decided; join ``transactions`` for the rest). The
DuckDB views of :func:`connect` keep one row per transaction: the first decision (what was
acted on: a replay's repeat comes later) and the latest label. Files written under an earlier
schema are read by column name (columns a file
lacks are null), so a table's schema can grow.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

import msgspec
import msgspec.inspect as mi
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.errors import LakeError
from services.core.contract import Decision, LabelRecord, Transaction
from services.core.tokens import truncate_ip

if TYPE_CHECKING:
    import duckdb

Table = Literal["transactions", "decisions", "labels"]
TABLES: Final[tuple[Table, ...]] = ("transactions", "decisions", "labels")
RETIRED_GRACE_MS: Final = 10 * 60 * 1000  # a reader that listed a compacted file may still open it
_MANIFEST = "_manifest.json"


def _arrow_type(info: mi.Type) -> pa.DataType:
    """The Parquet column type of a contract field (``int | str`` times are stored as ms)."""
    if isinstance(info, mi.UnionType):
        kinds = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return (
            pa.int64() if any(isinstance(t, mi.IntType) for t in kinds) else _arrow_type(kinds[0])
        )
    if isinstance(info, mi.StrType | mi.LiteralType):
        return pa.string()
    if isinstance(info, mi.BoolType):
        return pa.bool_()
    if isinstance(info, mi.IntType):
        return pa.int64()
    if isinstance(info, mi.FloatType):
        return pa.float64()
    if isinstance(info, mi.ListType):
        return pa.list_(_arrow_type(info.item_type))
    if isinstance(info, mi.DictType):
        return pa.string()  # JSON text: declared attributes differ from producer to producer
    raise TypeError(f"no Parquet column type for {info}")


def _fields(struct: type[msgspec.Struct], skip: Sequence[str] = ()) -> list[pa.Field]:
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    return [pa.field(f.name, _arrow_type(f.type)) for f in info.fields if f.name not in skip]


SCHEMAS: Final[dict[Table, pa.Schema]] = {
    "transactions": pa.schema(_fields(Transaction)),
    "decisions": pa.schema(_fields(Decision)),
    "labels": pa.schema(_fields(LabelRecord)),
}
_PARTITION_TIME: Final[dict[Table, str]] = {
    "transactions": "event_time",
    "decisions": "event_time",
    "labels": "labelled_at",
}
# One row per transaction in the views: the first sighting, the first decision (what was acted
# on: a replay's repeat comes later), the latest label.
_LATEST: Final[dict[Table, str]] = {
    "transactions": "event_time",
    "decisions": "decided_at",
    "labels": "labelled_at DESC",
}


COORDINATE_DECIMALS = 2  # about 1 km: where, not which house


def transaction_row(tx: Transaction) -> dict[str, Any]:
    """A transaction as the lake keeps it: IP truncated, coordinates rounded (ids are tokens)."""
    row = msgspec.structs.asdict(tx)
    row["ip"] = truncate_ip(tx.ip)
    row["attributes"] = msgspec.json.encode(tx.attributes).decode() if tx.attributes else None
    for name in ("lat", "lon"):
        if row[name] is not None:
            row[name] = round(row[name], COORDINATE_DECIMALS)
    return row


def decision_row(decision: Decision) -> dict[str, Any]:
    """A decision as the ledger keeps it: its feature row as JSON text (names vary with the
    producer's signals)."""
    row = msgspec.structs.asdict(decision)
    row["features"] = msgspec.json.encode(decision.features).decode() if decision.features else None
    return row


def label_row(record: LabelRecord) -> dict[str, Any]:
    return msgspec.structs.asdict(record)


def read_file(path: Path, table: Table) -> pa.Table:
    """A file of ``table`` in its current schema, by column name: columns of an earlier
    schema that are gone are dropped, new ones are null."""
    data = pq.read_table(path)
    schema = SCHEMAS[table]
    columns = [
        data[f.name].cast(f.type) if f.name in data.column_names
        else pa.nulls(data.num_rows, f.type)
        for f in schema
    ]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=schema)


def find_transactions(
    lake: Lake, transaction_ids: Sequence[str], since_ms: int, until_ms: int
) -> dict[str, dict[str, Any]]:
    """Each archived transaction among ``transaction_ids`` dated from ``since_ms`` to
    ``until_ms`` (by UTC day), with its first decision if there is one: ``LabelRecord`` fields
    by transaction id. The dates prune whole partitions (ids are not ordered: a scan within)."""
    if not transaction_ids or not lake.files("transactions"):
        return {}
    since, until = _date(since_ms), _date(until_ms)
    query = """
        WITH d AS (
            SELECT transaction_id, decision, score, model_version FROM decisions_all
            WHERE date >= ? AND date <= ? AND list_contains(?, transaction_id)
            QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY decided_at) = 1
        )
        SELECT t.transaction_id, t.event_time, t.card_id, t.customer_id, t.merchant_id,
               t.device_id, d.decision, d.score, d.model_version
        FROM transactions_all t LEFT JOIN d USING (transaction_id)
        WHERE t.date >= ? AND t.date <= ? AND list_contains(?, t.transaction_id)
        QUALIFY row_number() OVER (PARTITION BY t.transaction_id ORDER BY t.event_time) = 1
    """
    ids = list(transaction_ids)
    cursor = connect(lake).execute(query, [since, until, ids, since, until, ids])
    names = [d[0] for d in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


@dataclass(frozen=True)
class Sourced:
    """A row and the Kafka record it came from (the manifest's offsets make writes once-only).

    ``epoch`` names the incarnation of the topic (its topic id): offsets of another broker, or
    of the topic before it was re-created, are never trusted for this one.
    """

    topic: str
    partition: int
    offset: int
    row: dict[str, Any]
    epoch: str = ""


class Appended(NamedTuple):
    files: int
    rows: int


class Manifest(msgspec.Struct):
    files: dict[str, int] = {}  # relative path -> rows
    offsets: dict[str, int] = {}  # "epoch/topic:partition" -> last offset written
    retired: dict[str, int] = {}  # relative path -> when compaction replaced it (epoch ms)


@dataclass(frozen=True)
class Compacted:
    table: Table
    partitions: int
    files_in: int
    files_out: int
    rows: int
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)  # partitions changed meanwhile


def _date(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d")


def _source(topic: str, partition: int, epoch: str) -> str:
    return f"{epoch}/{topic}:{partition}" if epoch else f"{topic}:{partition}"


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, table: Table) -> Path:
        return self.root / table

    def manifest(self, table: Table) -> Manifest:
        path = self._dir(table) / _MANIFEST
        try:
            return msgspec.json.decode(path.read_bytes(), type=Manifest)
        except FileNotFoundError:
            return Manifest()
        except msgspec.DecodeError as error:
            raise LakeError(f"{table}/{_MANIFEST} is not a lake manifest: {error}") from None

    @contextmanager
    def _committing(self, table: Table) -> Iterator[Manifest]:
        """The manifest to change, written back atomically when the block ends without error."""
        directory = self._dir(table)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / "_manifest.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = self.manifest(table)
            yield manifest
            tmp = directory / f".{_MANIFEST}.{uuid.uuid4().hex}.tmp"
            with tmp.open("wb") as handle:
                handle.write(msgspec.json.encode(manifest))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, directory / _MANIFEST)

    def _write_file(self, table: Table, date: str, rows: pa.Table) -> str:
        """A new Parquet file, not yet part of the table: its path relative to the table."""
        relative = f"date={date}/part-{uuid.uuid4().hex}.parquet"
        path = self._dir(table) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path)
        return relative

    def append(self, table: Table, records: Sequence[Sourced]) -> Appended:
        """Add the records not written before (by offset)."""
        written = self.manifest(table).offsets
        fresh = [r for r in records
                 if r.offset > written.get(_source(r.topic, r.partition, r.epoch), -1)]  # fmt: skip
        if not fresh:
            return Appended(0, 0)
        by_date: dict[str, list[dict[str, Any]]] = {}
        for record in fresh:
            by_date.setdefault(_date(record.row[_PARTITION_TIME[table]]), []).append(record.row)
        schema = SCHEMAS[table]
        files = {
            self._write_file(table, date, pa.Table.from_pylist(rows, schema=schema)): len(rows)
            for date, rows in by_date.items()
        }
        with self._committing(table) as manifest:
            for record in fresh:
                key = _source(record.topic, record.partition, record.epoch)
                manifest.offsets[key] = max(manifest.offsets.get(key, -1), record.offset)
            manifest.files.update(files)
        return Appended(len(files), len(fresh))

    def next_offset(self, table: Table, topic: str, partition: int, epoch: str = "") -> int | None:
        """Where to resume reading ``topic``'s partition (of ``epoch``) into ``table``; None: from
        the start (a topic incarnation the lake has not seen)."""
        last = self.manifest(table).offsets.get(_source(topic, partition, epoch))
        return None if last is None else last + 1

    def files(self, table: Table) -> list[Path]:
        return [self._dir(table) / relative for relative in sorted(self.manifest(table).files)]

    def rows(self, table: Table) -> int:
        return sum(self.manifest(table).files.values())

    def compact(self, table: Table, target_rows: int = 1_000_000) -> Compacted:
        """Merge each date's small files into one; delete what earlier compactions retired and
        files no manifest names (a writer that crashed before its commit), once old enough."""
        manifest = self.manifest(table)
        groups: dict[str, list[str]] = {}
        for relative, rows in manifest.files.items():
            if rows < target_rows:
                groups.setdefault(relative.split("/", 1)[0], []).append(relative)
        merged: dict[str, tuple[list[str], str, int]] = {}
        for partition, inputs in sorted(groups.items()):
            if len(inputs) < 2:
                continue
            merged_table = pa.concat_tables(read_file(self._dir(table) / r, table) for r in inputs)
            output = self._write_file(table, partition.removeprefix("date="), merged_table)
            merged[partition] = (inputs, output, merged_table.num_rows)
        now = int(time.time() * 1000)
        skipped: list[str] = []
        with self._committing(table) as current:
            for partition, (inputs, output, rows) in merged.items():
                if not all(r in current.files for r in inputs):
                    skipped.append(partition)  # compacted by someone else meanwhile
                    (self._dir(table) / output).unlink()
                    continue
                for relative in inputs:
                    del current.files[relative]
                    current.retired[relative] = now
                current.files[output] = rows
            expired = [r for r, at in current.retired.items() if now - at >= RETIRED_GRACE_MS]
            for relative in expired:
                (self._dir(table) / relative).unlink(missing_ok=True)
                del current.retired[relative]
            expired += self._remove_orphans(table, current, now)
        done = [p for p in merged if p not in skipped]
        return Compacted(
            table, len(done), sum(len(merged[p][0]) for p in done), len(done),
            sum(merged[p][2] for p in done), len(expired), skipped,
        )  # fmt: skip

    def erase(self, table: Table, column: str, values: set[str]) -> int:
        """Remove every row whose ``column`` is one of ``values``: each file that holds one is
        replaced by a copy without them, in one commit, and deleted at once (erasure does not
        wait out the readers' grace); so are retired files that hold one. Rows removed."""
        if not values:
            return 0
        wanted, removed, doomed = pa.array(sorted(values)), 0, []
        with self._committing(table) as manifest:
            for relative in [*manifest.files, *manifest.retired]:
                path = self._dir(table) / relative
                if not path.exists():
                    continue
                data = read_file(path, table)
                hit = pc.is_in(data[column], value_set=wanted)
                if not pc.any(hit).as_py():
                    continue
                doomed.append(path)
                if relative in manifest.retired:
                    del manifest.retired[relative]
                    continue
                kept = data.filter(pc.invert(hit))
                removed += data.num_rows - kept.num_rows
                del manifest.files[relative]
                if kept.num_rows:
                    date = relative.split("/", 1)[0].removeprefix("date=")
                    manifest.files[self._write_file(table, date, kept)] = kept.num_rows
        for path in doomed:
            path.unlink(missing_ok=True)
        return removed

    def _remove_orphans(self, table: Table, manifest: Manifest, now_ms: int) -> list[str]:
        orphans = []
        for path in self._dir(table).glob("date=*/part-*.parquet"):
            relative = path.relative_to(self._dir(table)).as_posix()
            old = now_ms - path.stat().st_mtime * 1000 >= RETIRED_GRACE_MS
            if old and relative not in manifest.files and relative not in manifest.retired:
                path.unlink()
                orphans.append(relative)
        return orphans


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per table over the manifest's files (one row per
    transaction) and ``{table}_all`` views of every row as written."""
    import duckdb

    connection = duckdb.connect()
    for table in TABLES:
        files = ", ".join(_sql_string(str(path)) for path in lake.files(table))
        if files:
            source = f"read_parquet([{files}], hive_partitioning = true, union_by_name = true)"
        else:
            empty = SCHEMAS[table].empty_table().append_column("date", pa.array([], pa.string()))
            connection.register(f"_{table}_empty", empty)
            source = f"_{table}_empty"
        connection.execute(f"CREATE VIEW {table}_all AS SELECT * FROM {source}")
        connection.execute(
            f"CREATE VIEW {table} AS SELECT * FROM {table}_all QUALIFY row_number() OVER "
            f"(PARTITION BY transaction_id ORDER BY {_LATEST[table]}) = 1"
        )
    return connection


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
