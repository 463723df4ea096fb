"""A mapping file: how the columns of a producer's own file become transactions and labels.

With a mapping and a signals file (``services.core.signals``), any CSV (plain or gzipped) or
JSON-lines file can be replayed (``fraudstream produce --from-csv FILE --mapping M``) and
trained or evaluated on (``--data FILE --mapping M``): no code for a new data set.

.. code-block:: yaml

    signals: signals.yaml            # relative to this file
    fields:                          # contract field: a column, {columns: [...]}, or {value: x}
      transaction_id: TransactionID
      event_time: {column: TransactionDT, unit: s, origin: "2017-12-01T00:00:00Z"}
      card_id: {columns: [card1, card2, card3, card5, addr1]}   # joined with "-"
      amount: TransactionAmt
      currency: {value: USD}
      country: {value: US}
      channel: {value: ecommerce}
      merchant_id: {column: ProductCD}
      device_id: DeviceInfo
    label: isFraud                   # or {column: ..., fraud: [..]}; fraud: 1, true, yes, fraud
    attributes: {P_emaildomain: email_domain, ProductCD: product_code}
    attributes: {card1: card1, addr1: addr1}   # a mapped field's column, as an attribute too
    rest: true                       # every column no field uses: an attribute, lower-cased

Fields left out: ``customer_id`` is the card, ``merchant_id`` ``unknown``, the MCC ``5999``
and the channel ``ecommerce``; ``currency`` and ``country`` must be given. Empty values are
missing. ``event_time`` units: ``ms`` or ``s`` (since ``origin``, default the Unix epoch) or
``datetime`` (RFC 3339, or ``format`` in strptime's language, read as UTC).
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import msgspec
from pydantic import Field, model_validator

from services.core.card_csv import open_text
from services.core.contract import AttributeValue, InvalidEvent, Transaction, parse_event_time
from services.core.errors import UserError
from services.core.signals import (
    EMPTY,
    NAME,
    Signals,
    Strict,
    load_signals,
    parse_boolean,
    validated,
)

FRAUD_VALUES: Final = ("1", "true", "yes", "fraud", "t", "1.0")
DEFAULTS: Final = {"merchant_id": "unknown", "merchant_category": "5999", "channel": "ecommerce"}
REQUIRED: Final = ("transaction_id", "event_time", "card_id", "amount", "currency", "country")
_FIELDS: Final = tuple(f for f in Transaction.__struct_fields__ if f != "attributes")
_NOT_NAME: Final = re.compile(r"[^a-z0-9_]+")
_FIELD_BYTES: Final = 64 * 1024  # a longer CSV field is a broken file, said in one line


class MappingError(UserError, ValueError):
    """The mapping file is not valid, or does not fit the data; the message says where."""


class Source(Strict):
    """Where a field's value comes from: a column, several joined with ``-``, or a constant."""

    column: str | None = None
    columns: list[str] | None = None
    value: str | None = None
    unit: Literal["ms", "s", "datetime"] = "ms"
    origin: str | None = None
    format: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Source:
        if sum(x is not None for x in (self.column, self.columns, self.value)) != 1:
            raise ValueError("give exactly one of column, columns, value")
        return self

    def read(self, row: dict[str, Any]) -> str | None:
        if self.value is not None:
            return self.value
        names = self.columns or [self.column or ""]
        parts = [_text(row.get(n)) for n in names]
        if all(p is None for p in parts):
            return None
        return "-".join(p or "" for p in parts)

    @property
    def used(self) -> list[str]:
        return self.columns or ([self.column] if self.column else [])


class Label(Strict):
    column: str
    fraud: tuple[str, ...] = FRAUD_VALUES


class Mapping(Strict):
    fields: dict[str, str | Source]
    label: str | Label | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    rest: bool = False
    signals: str | None = None

    @model_validator(mode="after")
    def _known(self) -> Mapping:
        unknown = [f for f in self.fields if f not in _FIELDS]
        if unknown:
            raise ValueError(f"fields {', '.join(unknown)}: not in the contract "
                             f"({', '.join(_FIELDS)})")  # fmt: skip
        absent = [f for f in REQUIRED if f not in self.fields]
        if absent:
            raise ValueError(f"fields {', '.join(absent)}: map a column or give a value")
        bad = [a for a in self.attributes.values() if not NAME.fullmatch(a)]
        if bad:
            raise ValueError(f"attribute names are lower-case identifiers: {', '.join(bad)}")
        return self

    def source(self, field: str) -> Source | None:
        given = self.fields.get(field)
        return Source(column=given) if isinstance(given, str) else given

    @property
    def label_spec(self) -> Label | None:
        return Label(column=self.label) if isinstance(self.label, str) else self.label


def attribute_name(column: str) -> str:
    """The attribute a column becomes under ``rest: true``: lower-cased, an identifier of at
    most 48 characters."""
    name = _NOT_NAME.sub("_", column.lower()).strip("_")
    return (name if name[:1].isalpha() else f"a_{name}")[:48]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class MappedFile:
    """A data file read through a mapping: transactions (or why not), with labels."""

    def __init__(self, mapping: Mapping, signals: Signals) -> None:
        self.mapping, self.signals = mapping, signals
        self._sources = {f: s for f in _FIELDS if (s := mapping.source(f)) is not None}
        self._label = mapping.label_spec
        self._fraud = {v.lower() for v in self._label.fraud} if self._label else set()
        self._time = self._sources["event_time"]
        try:
            self._origin = parse_event_time(self._time.origin, "origin") if self._time.origin else 0
        except ValueError as error:
            raise MappingError(
                f"fields.event_time.origin: {str(error).split(' - at')[0]}"
            ) from None

    def columns_for(self, header: list[str], declared: bool = True) -> dict[str, str]:
        """Column -> attribute, checked against the header (and the signals file)."""
        used = {c for s in self._sources.values() for c in s.used}
        if self._label:
            used.add(self._label.column)
        missing = sorted((used | set(self.mapping.attributes)) - set(header))
        if missing:
            raise MappingError(f"columns not in the file: {', '.join(missing[:10])}")
        chosen = dict(self.mapping.attributes)
        if self.mapping.rest:  # the columns of mapped fields (card numbers...) only if named
            chosen |= {c: attribute_name(c) for c in header if c not in used and c not in chosen}
        names: dict[str, str] = {}
        for column, name in chosen.items():
            if name in names:
                raise MappingError(f"columns {names[name]!r} and {column!r} both become "
                                   f"attribute {name}: name one in attributes")  # fmt: skip
            names[name] = column
        undeclared = sorted({a for a in chosen.values() if a not in self.signals.attributes})
        if undeclared and declared:
            raise MappingError(
                f"attributes not declared in the signals file: {', '.join(undeclared[:10])}"
                f"{' ...' if len(undeclared) > 10 else ''} (fraudstream signals infer writes one)"
            )
        return chosen

    def transaction(self, row: dict[str, Any], attributes: dict[str, str]) -> Transaction:
        """One row as a transaction; raises ValueError naming the field."""
        values: dict[str, Any] = dict(DEFAULTS)
        for field, source in self._sources.items():
            text = source.read(row)
            if text is not None:
                values[field] = text
        values.setdefault("customer_id", values.get("card_id"))
        values["event_time"] = self._event_time(values.get("event_time"))
        for field in ("amount", "lat", "lon"):
            if field in values:
                values[field] = _number(values[field], field)
        attrs = {}
        for column, name in attributes.items():
            text = _text(row.get(column))
            if text is not None:
                attrs[name] = self._attribute(name, text)
        try:
            tx = msgspec.convert(values | ({"attributes": attrs} if attrs else {}), Transaction)
        except msgspec.ValidationError as error:
            raise ValueError(str(error)) from None
        problem = self.signals.check(tx)  # as the job will judge it
        if problem is not None:
            raise ValueError(f"{problem.reason} - at `$.{problem.field}`")
        return tx

    def is_fraud(self, row: dict[str, Any]) -> bool | None:
        if self._label is None:
            return None
        return (_text(row.get(self._label.column)) or "").lower() in self._fraud

    def _event_time(self, text: str | None) -> int:
        if text is None:
            raise ValueError("no event time - at `$.event_time`")
        unit = self._time.unit
        if unit == "datetime":
            if self._time.format is None:
                return parse_event_time(text)
            try:
                when = datetime.strptime(text, self._time.format).replace(tzinfo=UTC)
            except ValueError:
                raise ValueError(f"bad time {text[:40]!r} - at `$.event_time`") from None
            return int(when.timestamp() * 1000)
        scale = 1000 if unit == "s" else 1
        return self._origin + round(_number(text, "event_time") * scale)

    def _attribute(self, name: str, text: str) -> AttributeValue:
        kind = self.signals.attributes[name].type
        if kind == "number":
            return _number(text, f"attributes.{name}")
        if kind == "boolean":
            value = parse_boolean(text)
            if value is None:
                raise ValueError(f"not a boolean: {text[:20]!r} - at `$.attributes.{name}`")
            return value
        if kind == "timestamp":
            return int(text) if text.isdigit() else text
        return text

    def read(self, path: Path) -> Iterator[MappedRow]:
        """Every row of ``path`` (CSV, gzipped CSV or JSON lines), in file order."""
        if not path.is_file():
            raise MappingError(f"{path.name}: no such file")
        with open_text(path) as handle:
            rows, header = _rows(handle, path)
            attributes = self.columns_for(header)
            for line, row in rows:
                try:
                    event: Transaction | InvalidEvent = self.transaction(row, attributes)
                except (ValueError, TypeError, OverflowError) as error:
                    event = _invalid(str(error))
                yield MappedRow(line, event, self.is_fraud(row))


class MappedRow(msgspec.Struct, frozen=True):
    line: int
    event: Transaction | InvalidEvent
    is_fraud: bool | None


def _invalid(message: str) -> InvalidEvent:
    field = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else "$"
    return InvalidEvent(field, message.split(" - at `")[0])


def _number(text: str, field: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text[:20]!r} - at `$.{field}`") from None


_object = msgspec.json.Decoder(dict[str, Any]).decode


def _object_or_empty(line: str) -> dict[str, Any]:
    """A JSON line's object, or an empty one (its row is then invalid: no fields)."""
    try:
        return _object(line)
    except (msgspec.DecodeError, RecursionError):
        return {}


def _rows(handle: TextIO, path: Path) -> tuple[Iterator[tuple[int, dict[str, Any]]], list[str]]:
    """(line, row) pairs and the columns of a CSV file (its header), or of a JSON-lines file
    (its first line's keys), read a row at a time."""
    try:
        if ".jsonl" in path.suffixes:
            lines = ((n, line) for n, line in enumerate(handle, start=1) if line.strip())
            first = next(lines, None)
            if first is None or not (columns := _object_or_empty(first[1])):
                raise MappingError(f"{path.name}: its first line is not a JSON object")
            rest = ((n, _object_or_empty(line)) for n, line in lines)
            return itertools.chain([(first[0], _object(first[1]))], rest), list(columns)
        csv.field_size_limit(_FIELD_BYTES)
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
    except (csv.Error, UnicodeDecodeError, OSError) as error:
        raise MappingError(f"{path.name}: not readable as CSV: {error}") from None
    if not header:
        raise MappingError(f"{path.name}: empty file, expected a header row")
    return _csv_rows(reader, path), header


def _csv_rows(reader: csv.DictReader[str], path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        for row in reader:
            yield reader.line_num, row
    except (csv.Error, UnicodeDecodeError) as error:
        raise MappingError(f"{path.name}: line {reader.line_num}: {error}") from None


def parse_mapping(text: str, source: str = "mapping") -> Mapping:
    return validated(Mapping, text, source, MappingError)


def read_mapping(path: Path) -> Mapping:
    try:
        return parse_mapping(path.read_text(encoding="utf-8"), path.name)
    except (OSError, UnicodeDecodeError) as error:
        raise MappingError(f"{path.name}: cannot read the mapping: {error}") from None


def load_mapping(path: Path, signals: Signals = EMPTY) -> MappedFile:
    """The mapping at ``path`` with the signals file it names (relative to it), else
    ``signals`` (those of the ``FRAUDSTREAM_MODEL_SIGNALS`` setting, say)."""
    mapping = read_mapping(path)
    if mapping.signals:
        signals = load_signals(path.parent / mapping.signals)
    return MappedFile(mapping, signals)


def infer_signals(mapped: MappedFile, path: Path, sample: int = 50_000) -> Signals:
    """A signals file for the attributes a mapping reads from ``path``, each typed by the
    first ``sample`` rows: numbers where every value is one, booleans where every value is
    one (``T``/``F``, ``true``/``false``), else categories. Nothing is marked personal."""
    with open_text(path) as handle:
        rows, header = _rows(handle, path)
        columns = mapped.columns_for(header, declared=False)
        kinds: dict[str, set[str]] = {c: set() for c in columns}
        for count, (_, row) in enumerate(rows):
            if count >= sample:
                break
            for column, seen in kinds.items():
                text = _text(row.get(column))
                if text is not None and len(seen) < 3:
                    seen.add(_kind(text))
    attributes = {}
    for column, seen in kinds.items():
        kind = "number" if seen == {"number"} else "boolean" if seen == {"boolean"} else "category"
        attributes[columns[column]] = {"type": kind}
    return Signals.model_validate({"attributes": attributes})


def _kind(text: str) -> str:
    try:
        float(text)
        return "number"
    except ValueError:
        return "boolean" if parse_boolean(text) is not None else "category"
