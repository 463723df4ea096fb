"""Labelled data for training and evaluation, from every supported format, as one frame.

Formats (chosen by file name and header):
- the generator's output: ``fraudstream produce --out NAME.jsonl`` writes the events, and
  its labels beside them as ``NAME.labels.csv``;
- the public card-transaction CSV (``trans_num``, ``cc_num``, ``amt``, ``is_fraud``, ...), plain
  or gzipped, read through the producer's mapping in ``services.core.card_csv``;
- the classic anonymised CSV (``Time, V1..V28, Amount, Class``): no card, merchant or place, so
  only per-row features apply (``ANONYMISED_FEATURE_NAMES``);
- the lake (a directory, ``models.lake.tables``): every archived transaction, labelled by analysts'
  latest dispositions; a transaction nobody labelled counts as legitimate;
- any CSV or JSON-lines file through a mapping file (``services.core.mapping``), with the
  attributes its signals file declares.

Labels become known ``LABEL_DELAY_MS`` after the event (``label_time``), which is what the
merchant fraud rate may use.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import pandas as pd

from models.errors import DataError
from models.features import definitions as f
from models.features.entities import signal_feature_names
from models.features.offline import attribute_column
from models.training.dataset_files import labels_path
from services.core.card_csv import is_card_csv_name, open_text, read_card_csv
from services.core.contract import InvalidEvent, Transaction, parse_event_time
from services.core.errors import UserError
from services.core.mapping import MappedFile, load_mapping
from services.core.signals import EARLIEST_TIMESTAMP_MS, EMPTY, Signals

Kind = Literal["transactions", "anonymised"]
_TX_FIELDS = tuple(n for n in Transaction.__struct_fields__ if n != "attributes")
_ANONYMISED_COLUMNS = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class")


@dataclass(frozen=True)
class Dataset:
    """Rows with ``is_fraud`` (bool), ``event_time`` (ms) and the columns of their kind."""

    kind: Kind
    frame: pd.DataFrame
    fingerprint: str  # sha256 of the source bytes, recorded in the model's metadata
    source: str  # the file name, for messages and metadata
    signals: Signals = field(default=EMPTY)  # the attributes its frame carries

    @property
    def feature_names(self) -> tuple[str, ...]:
        if self.kind == "anonymised":
            return f.ANONYMISED_FEATURE_NAMES
        return f.FEATURE_NAMES + signal_feature_names(self.signals)


def frame_from_transactions(
    transactions: list[Transaction], signals: Signals = EMPTY
) -> pd.DataFrame:
    """The contract's columns, one row per transaction (``event_time`` in ms), and one
    ``attr.<name>`` column per declared attribute (timestamps in epoch ms)."""
    rows = [msgspec.structs.astuple(tx)[: len(_TX_FIELDS)] for tx in transactions]
    frame = pd.DataFrame(rows, columns=list(_TX_FIELDS))
    frame["event_time"] = frame["event_time"].astype(np.int64)
    for column in ("amount", "lat", "lon"):
        frame[column] = frame[column].astype(np.float64)
    return _with_attributes(frame, [tx.attributes or None for tx in transactions], signals)


def _with_attributes(
    frame: pd.DataFrame, attributes: list[dict[str, Any] | None], signals: Signals
) -> pd.DataFrame:
    """``frame`` with an ``attr.<name>`` column per declared attribute (timestamps in epoch
    ms, missing values None or NaN)."""
    if not signals.attributes:
        return frame
    names = list(signals.attributes)
    values = pd.DataFrame.from_records([a or {} for a in attributes], columns=names)
    columns = {}
    for name, declared in signals.attributes.items():
        column = values[name]
        if declared.type == "timestamp":
            column = column.map(_epoch_ms)
        columns[attribute_column(name)] = column.to_numpy()
    return pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)


def _epoch_ms(value: object) -> float:
    """A timestamp attribute as epoch ms, NaN when missing or not one (as the job judges it:
    such a transaction is not decided, so it never reaches a file from the job)."""
    if not isinstance(value, int | str) or isinstance(value, bool):
        return np.nan
    try:
        return float(parse_event_time(value, "attribute", EARLIEST_TIMESTAMP_MS))
    except ValueError:
        return np.nan


def load(
    path: Path, mapping: Path | None = None, signals: Signals = EMPTY, labelled: bool = True
) -> Dataset:
    """Any supported file, with labels (``labelled``: both classes present, as training
    needs; drift needs none); raises DataError naming the problem. The attributes are those
    of the mapping's signals file, else of ``signals``."""
    if mapping is not None:
        dataset = _load_mapped(path, mapping, signals)
    elif path.is_dir():
        dataset = _load_lake(path, signals)
    elif not path.is_file():
        raise DataError(f"{path}: no such file or lake")
    elif path.suffix == ".jsonl":
        dataset = _load_generated(path, signals)
    elif is_card_csv_name(path):
        header = _header(path)
        if "trans_num" in header:
            dataset = _load_card_csv(path)
        elif set(_ANONYMISED_COLUMNS) <= set(header):
            dataset = _load_anonymised(path)
        else:
            raise DataError(
                f"{path.name}: not a known format: expected the card-transaction columns "
                f"(trans_num, cc_num, amt, is_fraud, ...) or Time, V1..V28, Amount, Class"
            )
    else:
        raise DataError(f"{path.name}: expected a .jsonl (generator output), .csv or .csv.gz file")
    _check(dataset, labelled)
    return dataset


def after_history(history: Dataset, later: Dataset) -> Dataset:
    """``later`` with ``history``'s rows before it, marked by a ``history`` column: features
    over both, in time, are what the stream knows when ``later`` arrives."""
    if history.kind != later.kind or later.kind != "transactions":
        raise DataError(
            f"{history.source} ({history.kind}) cannot be the history of {later.source} "
            f"({later.kind}): both must be transaction data"
        )
    frame = pd.concat(
        [history.frame.assign(history=True), later.frame.assign(history=False)],
        ignore_index=True,
    )
    digest = hashlib.sha256(f"{history.fingerprint}+{later.fingerprint}".encode()).hexdigest()
    return replace(later, frame=frame, fingerprint=digest,
                   source=f"{later.source} after {history.source}")  # fmt: skip


def _check(dataset: Dataset, labelled: bool = True) -> None:
    frame = dataset.frame
    if frame.empty:
        raise DataError(f"{dataset.source}: no rows")
    if not labelled:
        return
    positives = int(frame["is_fraud"].sum())
    if positives == 0:
        raise DataError(f"{dataset.source}: no positive (fraud) labels: nothing to learn from")
    if positives == len(frame):
        raise DataError(f"{dataset.source}: every row is fraud: nothing to compare with")


def _header(path: Path) -> list[str]:
    try:
        with open_text(path) as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:  # not gzip, not text
        raise DataError(f"{path.name}: cannot read a CSV header: {error}") from None


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _load_generated(path: Path, signals: Signals) -> Dataset:
    labels_file = labels_path(path)
    if not labels_file.is_file():
        raise DataError(f"{path.name}: its labels file {labels_file.name} is missing")
    decoder = msgspec.json.Decoder(Transaction)
    try:
        transactions = [decoder.decode(line) for line in path.read_bytes().splitlines() if line]
    except msgspec.DecodeError as error:
        raise DataError(f"{path.name}: not generator output: {error}") from None
    labels = pd.read_csv(labels_file, dtype={"transaction_id": str})
    if not {"transaction_id", "is_fraud"} <= set(labels.columns):
        raise DataError(f"{labels_file.name}: missing columns transaction_id, is_fraud")
    frame = frame_from_transactions(transactions, signals)
    fraud = labels.set_index("transaction_id")["is_fraud"].astype(bool)
    frame["is_fraud"] = frame["transaction_id"].map(fraud).fillna(False).astype(bool)
    return _with_label_time(Dataset("transactions", frame, _fingerprint(path, labels_file),
                                    path.name, signals))  # fmt: skip


_LAKE_ROWS = """
    SELECT t.* EXCLUDE (date), coalesce(l.label = 'fraud', false) AS is_fraud,
           l.labelled_at AS label_time
    FROM transactions t LEFT JOIN labels l USING (transaction_id)
"""


def _load_lake(path: Path, signals: Signals) -> Dataset:
    """Label time is the disposition's; unlabelled rows count in no merchant's labels, as
    online, where only dispositions reach the merchant counters."""
    from models.lake import tables as lk

    lake = lk.Lake(path)
    if not any(lake.files(table) for table in lk.TABLES):
        raise DataError(f"{path.name}: not a lake, or an empty one (no table has a file)")
    frame = lk.connect(lake).execute(_LAKE_ROWS).df()
    for column in ("amount", "lat", "lon", "label_time"):
        frame[column] = frame[column].astype(np.float64)
    frame["event_time"] = frame["event_time"].astype(np.int64)
    frame["is_fraud"] = frame["is_fraud"].astype(bool)
    decode = msgspec.json.Decoder(dict[str, Any] | None).decode
    attributes = [decode(a) if a else None for a in frame.pop("attributes").tolist()]
    frame = _with_attributes(frame, attributes, signals)
    manifests = sorted((path / table / "_manifest.json") for table in lk.TABLES)
    return Dataset("transactions", frame, _fingerprint(*[m for m in manifests if m.is_file()]),
                   path.name, signals)  # fmt: skip


def _load_card_csv(path: Path) -> Dataset:
    transactions, fraud = [], []
    bad = 0
    for row in read_card_csv(path):
        if isinstance(row.event, InvalidEvent):
            bad += 1
            continue
        transactions.append(row.event)
        fraud.append(row.is_fraud)
    if bad > len(transactions):
        raise DataError(f"{path.name}: {bad} of {bad + len(transactions)} rows are invalid")
    frame = frame_from_transactions(transactions)
    frame["is_fraud"] = np.array(fraud, dtype=bool)
    return _with_label_time(Dataset("transactions", frame, _fingerprint(path), path.name))


def _load_mapped(path: Path, mapping: Path, signals: Signals) -> Dataset:
    """A producer's own file through its mapping; rows that are not valid are counted, and
    more invalid than valid rows refuse the file."""
    try:
        mapped: MappedFile = load_mapping(mapping, signals)
        rows = list(mapped.read(path))
    except UserError as error:
        raise DataError(str(error)) from None
    if mapped.mapping.label is None:
        raise DataError(f"{mapping.name}: no label column: training and evaluation need one")
    transactions = [r.event for r in rows if isinstance(r.event, Transaction)]
    bad = [r for r in rows if isinstance(r.event, InvalidEvent)]
    if len(bad) > len(transactions):
        first = bad[0]
        assert isinstance(first.event, InvalidEvent)
        raise DataError(f"{path.name}: {len(bad)} of {len(rows)} rows are invalid (line "
                        f"{first.line}: {first.event.field}: {first.event.reason})")  # fmt: skip
    frame = frame_from_transactions(transactions, mapped.signals)
    frame["is_fraud"] = np.array([bool(r.is_fraud) for r in rows
                                  if isinstance(r.event, Transaction)], dtype=bool)  # fmt: skip
    fingerprint = _fingerprint(path, mapping)
    return _with_label_time(Dataset("transactions", frame, fingerprint, path.name,
                                    mapped.signals))  # fmt: skip


def _load_anonymised(path: Path) -> Dataset:
    raw = pd.read_csv(path)
    frame = pd.DataFrame(
        {
            "transaction_id": [f"row-{i}" for i in range(len(raw))],
            # Time is seconds since the first row of a two-day capture; no date, no zone.
            "event_time": (raw["Time"].to_numpy(np.float64) * 1000).astype(np.int64),
            "amount": raw["Amount"].astype(np.float64),
            "hour_of_day": ((raw["Time"] // 3600) % 24).astype(np.float64),
            **{f"v{i}": raw[f"V{i}"].astype(np.float64) for i in range(1, 29)},
            "is_fraud": raw["Class"].astype(int).astype(bool),
        }
    )
    return Dataset("anonymised", frame, _fingerprint(path), path.name)


def _with_label_time(dataset: Dataset) -> Dataset:
    dataset.frame["label_time"] = dataset.frame["event_time"] + f.LABEL_DELAY_MS
    return dataset
