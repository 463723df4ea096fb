"""The signals file: the transaction attributes a producer declares, and the entities whose
windows are features. One validated document, read by producers, the job, scoring and training.

.. code-block:: yaml

    attributes:                       # what ``Transaction.attributes`` may carry
      card_bin: {type: category}
      email_domain: {type: category}
      email: {type: category, personal: true}   # tokenized at the edge, never in clear
      risk_score: {type: number, min: 0, max: 100}
      three_ds: {type: boolean}
      account_opened: {type: timestamp}         # epoch ms or RFC 3339
    entities:                         # windowed aggregates and links, per value of these fields
      - by: [email_domain]
      - by: [device_id]
      - by: [card_bin, email_domain]  # a pair

An attribute the file does not declare, or one of the wrong type or out of bounds, makes its
transaction a dead letter naming ``attributes.<name>``; without a signals file a transaction
carries no attributes. Entities are keyed by contract fields or by category or number
attributes (a number as a code: a BIN, a postcode).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Final, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.core.contract import (
    ATTRIBUTE_NAME,
    MAX_ATTRIBUTES,
    AttributeValue,
    InvalidEvent,
    Transaction,
    control_problem,
    parse_event_time,
)
from services.core.errors import UserError
from services.core.tokens import looks_like_card_number

MAX_FILE_BYTES: Final = 256 * 1024  # a signals or mapping file
MAX_ENTITIES: Final = 16
MAX_NUMBER: Final = 1e30  # beyond, a float32 model input is no longer a number to compare
EARLIEST_TIMESTAMP_MS: Final = -2_208_988_800_000  # 1900-01-01: an account opened, a birth
ENTITY_FIELDS: Final = ("customer_id", "merchant_id", "merchant_category", "country",
                        "channel", "device_id", "ip")  # fmt: skip
"""Contract fields an entity may be keyed by (the card is the card's own state)."""
NAME: Final = re.compile(ATTRIBUTE_NAME.strip("^$"))
Window = Literal["1h", "24h", "7d", "30d"]
Stat = Literal["count", "sum", "mean", "max"]
_BOOLEAN_TEXT: Final = {"true": True, "false": False, "t": True, "f": False, "1": True,
                        "0": False, "yes": True, "no": False}  # fmt: skip


class SignalsError(UserError, ValueError):
    """The signals file is not valid; the message names each problem."""


_Document = TypeVar("_Document", bound=BaseModel)


class Strict(BaseModel):
    """A document part: unknown keys refused, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Attribute(Strict):
    type: Literal["number", "category", "boolean", "timestamp"]
    personal: bool = False
    min: float | None = None
    max: float | None = None
    description: str = ""

    @model_validator(mode="after")
    def _sound(self) -> Attribute:
        if self.personal and self.type != "category":
            raise ValueError("only a category can be personal (its values become tokens)")
        if (self.min is not None or self.max is not None) and self.type != "number":
            raise ValueError("bounds apply to numbers only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Entity(Strict):
    by: Annotated[tuple[str, ...], Field(min_length=1, max_length=2)]
    windows: Annotated[tuple[Window, ...], Field(min_length=1)] = ("1h", "24h", "7d", "30d")
    stats: Annotated[tuple[Stat, ...], Field(min_length=1)] = ("count", "sum", "mean", "max")

    @property
    def name(self) -> str:
        return "_".join(self.by)

    @model_validator(mode="after")
    def _once_each(self) -> Entity:
        for part in (self.by, self.windows, self.stats):
            if len(set(part)) != len(part):
                raise ValueError(f"a value repeats in {list(part)}")
        return self


class Signals(Strict):
    attributes: Annotated[dict[str, Attribute], Field(max_length=MAX_ATTRIBUTES)] = {}
    entities: Annotated[list[Entity], Field(max_length=MAX_ENTITIES)] = []

    @model_validator(mode="after")
    def _names(self) -> Signals:
        bad = [n for n in self.attributes if not NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"attribute names are lower-case identifiers: {', '.join(bad)}")
        keys = set(ENTITY_FIELDS) | {n for n, a in self.attributes.items()
                                     if a.type in ("category", "number")}  # fmt: skip
        for entity in self.entities:
            unknown = [b for b in entity.by if b not in keys]
            if unknown:
                raise ValueError(f"entity {entity.name}: {', '.join(unknown)} is neither a "
                                 f"contract field ({', '.join(ENTITY_FIELDS)}) nor a declared "
                                 "category or number attribute")  # fmt: skip
        names = [e.name for e in self.entities]
        if len(set(names)) != len(names):
            raise ValueError("an entity is declared twice")
        return self

    @property
    def personal(self) -> frozenset[str]:
        return frozenset(n for n, a in self.attributes.items() if a.personal)

    def check(self, tx: Transaction) -> InvalidEvent | None:
        """Why ``tx``'s attributes break this declaration, or None. The field names a declared
        attribute only (a producer's names never become metric labels)."""
        for name, value in (tx.attributes or {}).items():
            declared = self.attributes.get(name)
            if declared is None:
                return InvalidEvent("attributes", f"{name} is not declared in the signals file")
            problem = _value_problem(declared, value)
            if problem:
                shown = "a personal value" if declared.personal else problem
                return InvalidEvent(f"attributes.{name}", shown)
        return None


EMPTY: Final = Signals()


def _value_problem(declared: Attribute, value: AttributeValue) -> str | None:
    if value is None:
        return None  # missing, as if absent
    kind = declared.type
    if kind == "boolean":
        return None if isinstance(value, bool) else f"expected a boolean, got {_shown(value)}"
    if kind == "category":
        if not isinstance(value, str):
            return f"expected a string, got {_shown(value)}"
        return control_problem(value)
    if kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return f"expected epoch ms or RFC 3339, got {_shown(value)}"
        try:
            parse_event_time(value, "attribute", EARLIEST_TIMESTAMP_MS)
        except ValueError as error:
            return str(error).split(" - at `")[0]
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"expected a finite number, got {_shown(value)}"
    if abs(value) > MAX_NUMBER:
        return f"a number beyond ±{MAX_NUMBER:.0e}"
    if float(value).is_integer() and looks_like_card_number(str(int(value))):
        return "looks like a card number: map it to card_id, or send it as a personal category"
    if declared.min is not None and value < declared.min:
        return f"{value} is below the declared min {declared.min}"
    if declared.max is not None and value > declared.max:
        return f"{value} is above the declared max {declared.max}"
    return None


def _shown(value: AttributeValue) -> str:
    return repr(value)[:40]


def parse_boolean(text: str) -> bool | None:
    """A boolean as files spell it (``T``, ``false``, ``1``...), or None when it is not one."""
    return _BOOLEAN_TEXT.get(text.strip().lower())


def safe_yaml(text: str, source: str, error: type[UserError]) -> object:
    """A YAML document, or ``error`` saying in one line why not (size, syntax, depth)."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise error(f"{source}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise error(f"{source}: not YAML: {str(problem).splitlines()[0]}") from None
    except RecursionError:
        raise error(f"{source}: nested too deeply") from None


def validated(kind: type[_Document], text: str, source: str, error: type[UserError]) -> _Document:
    """A ``kind`` document from YAML (or JSON) text, or ``error`` listing every problem in
    one line."""
    document = safe_yaml(text, source, error)
    try:
        return kind.model_validate(document or {})
    except ValidationError as invalid:
        problems = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                    for e in invalid.errors()]  # fmt: skip
        raise error(f"{source}: " + "; ".join(problems)) from None


def parse_signals(text: str, source: str = "signals") -> Signals:
    """A validated signals file; raises SignalsError, one line a problem."""
    return validated(Signals, text, source, SignalsError)


def load_signals(path: Path | None) -> Signals:
    """The signals file at ``path``; no path: no attributes, no entities."""
    if path is None:
        return EMPTY
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SignalsError(f"{path.name}: cannot read the signals file: {error}") from None
    return parse_signals(text, path.name)


def to_yaml(signals: Signals) -> str:
    return yaml.safe_dump(signals.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
