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
    rest: true                       # every other column (but the id, time, amount and label
                                     # ones) is also an attribute, its name lower-cased

Fields left out: ``customer_id`` is the card, ``merchant_id`` ``unknown``, the MCC ``5999``
and the channel ``ecommerce``; ``currency`` and ``country`` must be given. Empty values are
missing. ``event_time`` units: ``ms`` or ``s`` (since ``origin``, default the Unix epoch) or
``datetime`` (RFC 3339, or ``format`` in strptime's language, read as UTC).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import msgspec
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from services.core.card_csv import open_text
from services.core.contract import AttributeValue, InvalidEvent, Transaction, parse_event_time
from services.core.errors import UserError
from services.core.signals import EMPTY, NAME, Signals, load_signals, parse_boolean

MAX_FILE_BYTES: Final = 256 * 1024
FRAUD_VALUES: Final = ("1", "true", "yes", "fraud", "t", "1.0")
DEFAULTS: Final = {"merchant_id": "unknown", "merchant_category": "5999", "channel": "ecommerce"}
REQUIRED: Final = ("transaction_id", "event_time", "card_id", "amount", "currency", "country")
_FIELDS: Final = tuple(f for f in Transaction.__struct_fields__ if f != "attributes")
_NOT_NAME: Final = re.compile(r"[^a-z0-9_]+")


class MappingError(UserError, ValueError):
    """The mapping file is not valid, or does not fit the data; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
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


class Label(_Strict):
    column: str
    fraud: list[str] = list(FRAUD_VALUES)


class Mapping(_Strict):
    fields: dict[str, str | Source]
    label: str | Label | None = None
    attributes: dict[str, str] = {}
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
    """The attribute a column becomes under ``rest: true``: lower-cased, an identifier."""
    name = _NOT_NAME.sub("_", column.lower()).strip("_")
    return name if name[:1].isalpha() else f"a_{name}"


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
        self._origin = parse_event_time(self._time.origin, "origin") if self._time.origin else 0

    def columns_for(self, header: list[str], declared: bool = True) -> dict[str, str]:
        """Column -> attribute, checked against the header (and the signals file)."""
        used = {c for s in self._sources.values() for c in s.used}
        if self._label:
            used.add(self._label.column)
        missing = sorted((used | set(self.mapping.attributes)) - set(header))
        if missing:
            raise MappingError(f"columns not in the file: {', '.join(missing[:10])}")
        chosen = dict(self.mapping.attributes)
        if self.mapping.rest:  # a column of the card's key, say, is a signal of its own too
            own = {c for f in ("transaction_id", "event_time", "amount")
                   for c in self._sources[f].used}  # fmt: skip
            own.add(self._label.column if self._label else "")
            chosen |= {c: attribute_name(c) for c in header if c not in own and c not in chosen}
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
            return msgspec.convert(values | {"attributes": attrs or None}, Transaction)
        except msgspec.ValidationError as error:
            raise ValueError(str(error)) from None

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
                except (ValueError, TypeError) as error:
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


def _rows(handle: TextIO, path: Path) -> tuple[Iterator[tuple[int, dict[str, Any]]], list[str]]:
    """(line, row) pairs and the columns of a CSV or JSON-lines file."""
    if ".jsonl" in path.suffixes:
        decode = msgspec.json.Decoder(dict[str, Any]).decode
        lines = [(n, line) for n, line in enumerate(handle, start=1) if line.strip()]
        first = decode(lines[0][1]) if lines else {}

        def parsed() -> Iterator[tuple[int, dict[str, Any]]]:
            for number, line in lines:
                try:
                    yield number, decode(line)
                except msgspec.DecodeError:
                    yield number, {}

        return parsed(), list(first)
    reader = csv.DictReader(handle)
    header = list(reader.fieldnames or [])
    if not header:
        raise MappingError(f"{path.name}: empty file, expected a header row")
    return ((reader.line_num, row) for row in reader), header


def parse_mapping(text: str, source: str = "mapping") -> Mapping:
    if len(text.encode()) > MAX_FILE_BYTES:
        raise MappingError(f"{source}: larger than {MAX_FILE_BYTES} bytes")
    try:
        document = yaml.safe_load(text)
        return Mapping.model_validate(document or {})
    except yaml.YAMLError as error:
        raise MappingError(f"{source}: not YAML: {str(error).splitlines()[0]}") from None
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                    for e in error.errors()]  # fmt: skip
        raise MappingError(f"{source}: " + "; ".join(problems)) from None


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
