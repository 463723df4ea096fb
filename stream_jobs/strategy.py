"""The strategy document: the rules, lookup tables and thresholds a fraud team steers the job
with, as data. One validated, versioned document; rules are CEL expressions.

.. code-block:: yaml

    version: 7
    effective_from: 2026-12-06T09:00:00Z     # event time; the publisher refuses the past
    tables:                                  # named lookup tables: a map, or a list (a set)
      amount_limit_usd: {"7995": 2000.0, "6011": 1000.0}
      risky_countries: [NG, RU]
    rules:
      - id: amount_limit
        when: amount_usd > (merchant_category in amount_limit_usd
                            ? amount_limit_usd[merchant_category] : 10000.0)
        outcome: review                      # or decline; a rule never approves
        state: active                        # shadow: counted and recorded, not acted on
    thresholds: {mode: cost, review_cost_usd: 5.0, daily_alert_budget: 500}

A rule reads features (``amount_usd``, a declared entity's ``email_domain_count_24h``), the
transaction's fields (``merchant_category``, ``channel``...), ``attributes`` (a map of the
declared attributes it carries: guard with ``has(attributes.x)``), ``score`` and
``probability`` (the model's, when it answered) and the tables by name. Numbers are doubles:
write ``2.0 * amount_usd``, not ``2 * amount_usd``. A missing signal is ``null``.

Publishing compiles every rule and evaluates it on typed sample rows, an all-zero row and a row
without any optional signal: the binding has no type checker, so this is the type check. A rule
that still fails at run time does not fire and is counted; it never fails a batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import cel
from pydantic import Field, ValidationInfo, field_validator, model_validator

from models.features.entities import serving_names, signal_feature_names
from services.core.contract import parse_event_time
from services.core.errors import UserError
from services.core.signals import EMPTY, Signals, Strict, validated
from stream_jobs.rules import Outcome

MAX_RULES: Final = 500
MAX_EXPRESSION: Final = 4_096  # characters of one rule's ``when``
MAX_NESTING: Final = 32  # brackets deep: the CEL parser recurses
MAX_TABLES: Final = 100
MAX_TABLE_ENTRIES: Final = 50_000  # over all tables
RULE_ID: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_TEXT: Final = 1_000  # characters of a description
MAX_VALUE: Final = 128  # characters of a table's key or text value
MAX_VERSION: Final = 2**31 - 1
COMPREHENSION: Final = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(")
"""A comprehension's cost grows with what it walks (nested: the product): refused, so that a
rule's cost is bounded by its length. A table and ``in`` do what they would."""
RESERVED: Final = ("blocklist_",)  # the codes of a disposition's blocks
TRANSACTION_FIELDS: Final = (
    "customer_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "country",
    "channel",
    "device_id",
    "ip",
    "lat",
    "lon",
)
"""Contract fields a rule may name (the card is its token: lists address it)."""
MODEL_VARIABLES: Final = ("score", "probability")
ATTRIBUTES: Final = "attributes"
RULE_PREFIX: Final = "rule:"
DEFAULT_FILE: Final = Path(__file__).with_name("default_strategy.yaml")


class StrategyError(UserError, ValueError):
    """The strategy document is not valid; the message has one line per problem."""


class Rule(Strict):
    id: str
    description: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    when: Annotated[str, Field(min_length=1)]
    outcome: Literal["review", "decline"]
    reason: str = ""  # the code analysts see (``rule:<reason>``); empty: the id
    state: Literal["active", "shadow", "paused"] = "active"

    @field_validator("id", "reason")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "reason" and not value:
            return value
        if not RULE_ID.match(value):
            raise ValueError("lower case letters, digits and _, 64 at most, a letter first")
        if value.startswith(RESERVED):
            raise ValueError(f"{RESERVED[0]}... names a fraud disposition's block")
        return value

    @field_validator("when")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if len(value) > MAX_EXPRESSION:
            raise ValueError(f"longer than {MAX_EXPRESSION} characters")
        if _nesting(value) > MAX_NESTING:
            raise ValueError(f"nested deeper than {MAX_NESTING} brackets")
        if COMPREHENSION.search(value):
            raise ValueError(
                "comprehensions (all, exists, exists_one, map, filter) are not "
                "allowed: a table and `in` do the same at a bounded cost"
            )
        return value

    @property
    def code(self) -> str:
        return RULE_PREFIX + (self.reason or self.id)


class Thresholds(Strict):
    """How the model's probability becomes an outcome (docs/strategy.md, "Thresholds")."""

    mode: Literal["cost", "model"] = "model"  # model: the version's own FPR thresholds
    loss_share: Annotated[float, Field(gt=0, le=1)] = 1.0  # of the amount lost to a fraud
    review_cost_usd: Annotated[float, Field(ge=0, le=10_000)] = 5.0
    false_decline_share: Annotated[float, Field(ge=0, le=10)] = 0.2  # of the amount
    false_decline_cost_usd: Annotated[float, Field(ge=0, le=10_000)] = 10.0
    decline_min_probability: Annotated[float, Field(ge=0, le=1)] = 0.5
    daily_alert_budget: Annotated[int, Field(ge=0, le=10_000_000)] = 500  # 0: no budget
    budget_window_s: Annotated[int, Field(ge=60, le=86_400)] = 3_600
    budget_refresh_s: Annotated[int, Field(ge=1, le=86_400)] = 60


Table = dict[str, float | str | bool] | list[str]


class Strategy(Strict):
    version: Annotated[int, Field(ge=0, le=MAX_VERSION)] = 0
    effective_from: int = 0  # event time, epoch ms
    description: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    restores: int | None = None  # a rollback: the version whose document this is
    replaces: int | None = None  # a rollback: the version it was published to undo
    tables: dict[str, Table] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    thresholds: Thresholds = Field(default_factory=Thresholds)

    @field_validator("effective_from", mode="before")
    @classmethod
    def _time(cls, value: object) -> int:
        if value == 0 and not isinstance(value, bool):
            return 0  # since always: the shipped default
        if isinstance(value, datetime):
            value = value.isoformat()
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("an event time: epoch milliseconds or RFC 3339 with a zone")
        return parse_event_time(value, "effective_from")

    @field_validator("tables")
    @classmethod
    def _tables(cls, tables: dict[str, Table]) -> dict[str, Table]:
        if len(tables) > MAX_TABLES:
            raise ValueError(f"more than {MAX_TABLES} tables")
        if sum(len(t) for t in tables.values()) > MAX_TABLE_ENTRIES:
            raise ValueError(f"more than {MAX_TABLE_ENTRIES} entries over all tables")
        for name, table in tables.items():
            if not RULE_ID.match(name):
                raise ValueError(f"table {name!r}: lower case letters, digits and _")
            texts = (
                [*table, *(v for v in table.values() if isinstance(v, str))]
                if isinstance(table, dict)
                else table
            )
            if any(len(t) > MAX_VALUE for t in texts):
                raise ValueError(f"table {name}: a key or value longer than {MAX_VALUE}")
        return tables

    @model_validator(mode="after")
    def _unique(self) -> Strategy:
        for what, names in (
            ("ids", [r.id for r in self.rules]),
            ("reasons", [r.code for r in self.rules]),
        ):
            if len(names) != len(set(names)):
                repeated = sorted({n for n in names if names.count(n) > 1})
                raise ValueError(f"rule {what} repeat: {repeated}")
        return self

    @property
    def effective(self) -> str:
        return datetime.fromtimestamp(self.effective_from / 1000, UTC).isoformat()


def _nesting(source: str) -> int:
    depth = deepest = 0
    for char in source:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def parse(text: str, source: str = "strategy") -> Strategy:
    """A document from YAML or JSON text; StrategyError lists every problem of its shape."""
    return validated(Strategy, text, source, StrategyError)


def load(path: Path) -> Strategy:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise StrategyError(f"{path.name}: cannot read: {error}") from None
    return parse(text, path.name)


def default() -> Strategy:
    """The shipped document: today's rules and limits."""
    return load(DEFAULT_FILE)


@dataclass(frozen=True)
class Fired:
    """The rules that fired for one event: acted on, shadow (recorded only), and failed."""

    active: list[tuple[str, Outcome]] = field(default_factory=list)
    shadow: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # rule ids


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    program: Any  # cel.Program
    needs_model: bool  # names the score: not evaluated without one
    tabled: bool  # reads a table


class Compiled:
    """A validated strategy, its rules compiled, evaluated per event.

    Handing values to CEL is what costs: each event's values go once into one context, and
    its tables with them (a context given new values converts them all again). Large tables
    stay apart: the rules that read them have a context that holds them once and reads the
    event's values through a resolver (a call per value read), so an event's cost never grows
    with the size of the tables."""

    def __init__(self, strategy: Strategy, signals: Signals = EMPTY) -> None:
        problems = check(strategy, signals)
        if problems:
            raise StrategyError("\n".join(problems))
        self.strategy = strategy
        apart = _tables_apart(strategy)
        self._rules = [
            _compile(r, set(strategy.tables) if apart else set())
            for r in strategy.rules
            if r.state != "paused"
        ]
        named = {n for c in self._rules for n in c.program.variables()} - set(strategy.tables)
        self._plain = sorted(
            {n for c in self._rules if not c.tabled for n in c.program.variables()} & named
        )
        self._needs_model = any(c.needs_model for c in self._rules)
        self._feature_index = [(n, i) for i, n in enumerate(serving_names(signals)) if n in named]
        self._fields = [n for n in TRANSACTION_FIELDS if n in named]
        self._attributes = ATTRIBUTES in named
        self._event: dict[str, Any] = {}  # this event's values (a missing one: the null below)
        tables = {k: _cel(v) for k, v in strategy.tables.items()}
        self._plain_context = cel.Context({} if apart else tables)
        self._tabled_context = cel.Context({**tables, **dict.fromkeys(named)})
        self._tabled_context.set_variable_resolver(self._event.get)

    @property
    def version(self) -> int:
        return self.strategy.version

    @property
    def thresholds(self) -> Thresholds:
        return self.strategy.thresholds

    @property
    def codes(self) -> list[str]:
        return [c.rule.code for c in self._rules]

    def evaluate(
        self, row: Sequence[float], tx: Any, score: float | None, probability: float | None
    ) -> Fired:
        """The rules that fire for ``tx`` with feature ``row`` (``score``: None without a
        model; a rule that names it then does not fire). A rule that fails, or gives anything
        but a boolean, does not fire and is reported."""
        if not self._rules:
            return Fired()
        event = self._event
        event.clear()
        for name, i in self._feature_index:
            event[name] = _number(row[i])
        for name in self._fields:
            event[name] = getattr(tx, name)
        if self._attributes:
            event[ATTRIBUTES] = dict(tx.attributes or {})
        if self._needs_model:
            event["score"], event["probability"] = score, probability
        if self._plain:
            self._plain_context.update({n: event.get(n) for n in self._plain})
        fired = Fired()
        for compiled in self._rules:
            if score is None and compiled.needs_model:
                continue
            context = self._tabled_context if compiled.tabled else self._plain_context
            try:
                result = compiled.program.execute(context)
            except Exception:  # any failure of a user rule: it does not fire
                result = None
            if not isinstance(result, bool):
                fired.errors.append(compiled.rule.code)
            elif result and compiled.rule.state == "active":
                fired.active.append((compiled.rule.code, compiled.rule.outcome))
            elif result:
                fired.shadow.append(compiled.rule.code)
        return fired


_TABLE_ENTRY_US: Final = 0.1  # handing one table entry to a CEL context (measured)
_RESOLVED_US: Final = 1.0  # one value read through a resolver


def _tables_apart(strategy: Strategy) -> bool:
    """Whether the tables cost more handed over with every event than the values their rules
    read through a resolver: small tables go with the event's values."""
    entries = sum(len(t) for t in strategy.tables.values())
    reads = sum(
        len(re.findall(r"[a-z_][a-z0-9_]*", r.when))
        for r in strategy.rules
        if any(name in r.when for name in strategy.tables)
    )
    return entries * _TABLE_ENTRY_US > reads * _RESOLVED_US


def _compile(rule: Rule, tables: set[str]) -> _Compiled:
    program = cel.compile(rule.when)
    names = set(program.variables())
    return _Compiled(rule, program, bool(names & set(MODEL_VARIABLES)), bool(names & tables))


def _number(value: float) -> float | None:
    return None if value != value else value  # NaN: a signal the event lacked


def _cel(value: Table) -> Any:
    """A table as CEL reads it: a list becomes a map of its items, so ``x in table`` is one
    lookup whatever its size."""
    return dict(value) if isinstance(value, dict) else dict.fromkeys(value, True)


def allowed_names(strategy: Strategy, signals: Signals) -> set[str]:
    return {
        *serving_names(signals),
        *TRANSACTION_FIELDS,
        *MODEL_VARIABLES,
        ATTRIBUTES,
        *strategy.tables,
    }


def check(strategy: Strategy, signals: Signals = EMPTY) -> list[str]:
    """Every problem of the document's rules, one line each: empty when it may be published."""
    problems: list[str] = []
    allowed = allowed_names(strategy, signals)
    clashes = set(strategy.tables) & (allowed - set(strategy.tables))
    problems += [f"table {name}: the name of a feature or field" for name in sorted(clashes)]
    samples = sample_rows(strategy, signals)
    for rule in strategy.rules:
        try:
            program = cel.compile(rule.when)
        except Exception as error:  # the binding raises ValueError and more
            problems.append(f"rule {rule.id}: does not compile: {_first_line(error)}")
            continue
        unknown = sorted(set(program.variables()) - allowed)
        if unknown:
            problems.append(
                f"rule {rule.id}: unknown names {', '.join(unknown)} (a rule reads "
                "features, transaction fields, attributes, score, probability "
                "and tables)"
            )
            continue
        failures = (_sample_problem(rule, program, name, row) for name, row in samples)
        problems += [p for p in failures if p][:1]  # one line a rule: its first failing row
    return problems


def _sample_problem(rule: Rule, program: Any, name: str, row: dict[str, Any]) -> str | None:
    if {"score", "probability"} & set(program.variables()) and row["score"] is None:
        return None  # such a rule is not evaluated without a model
    try:
        result = program.execute(cel.Context(row))
    except Exception as error:
        return f"rule {rule.id}: fails on {name}: {_first_line(error)}"
    if not isinstance(result, bool):
        return f"rule {rule.id}: gives {type(result).__name__} on {name}, not a boolean"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


_SAMPLE_ATTRIBUTE: Final[dict[str, Any]] = {
    "number": 12.5,
    "category": "sample",
    "boolean": True,
    "timestamp": 1_700_000_000_000,
}


def sample_rows(strategy: Strategy, signals: Signals) -> list[tuple[str, dict[str, Any]]]:
    """The typed rows every rule must give a boolean on: typical values, all zero, and every
    optional signal missing."""
    tables = {k: _cel(v) for k, v in strategy.tables.items()}
    names = serving_names(signals)
    fields: dict[str, Any] = {
        "customer_id": "customer-1",
        "merchant_id": "merchant-1",
        "merchant_category": "5411",
        "amount": 120.0,
        "currency": "USD",
        "country": "US",
        "channel": "online",
        "device_id": "device-1",
        "ip": "192.0.2.1",
        "lat": 40.7,
        "lon": -74.0,
    }
    attributes = {n: _SAMPLE_ATTRIBUTE[a.type] for n, a in signals.attributes.items()}
    typical = {
        **{n: 3.0 for n in names},
        **fields,
        ATTRIBUTES: attributes,
        "score": 0.42,
        "probability": 0.07,
        **tables,
    }
    zero = {
        **{n: 0.0 for n in names},
        **{k: (0.0 if isinstance(v, float) else "") for k, v in fields.items()},
        ATTRIBUTES: {},
        "score": 0.0,
        "probability": 0.0,
        **tables,
    }
    missing = {
        **typical,
        **{n: None for n in signal_feature_names(signals)},
        "device_id": None,
        "ip": None,
        "lat": None,
        "lon": None,
        "customer_id": None,
        ATTRIBUTES: {},
        "score": None,
        "probability": None,
    }
    return [
        ("a typical row", typical),
        ("an all-zero row", zero),
        ("a row without optional signals", missing),
    ]


def diff(old: Strategy, new: Strategy) -> list[str]:
    """What ``new`` changes against ``old``, a line each (rules, tables, thresholds)."""
    lines: list[str] = []
    before, after = {r.id: r for r in old.rules}, {r.id: r for r in new.rules}
    lines += [f"- rule {i}: {before[i].when}" for i in sorted(before.keys() - after.keys())]
    lines += [f"+ rule {i}: {after[i].when}" for i in sorted(after.keys() - before.keys())]
    for i in sorted(before.keys() & after.keys()):
        a, b = before[i].model_dump(), after[i].model_dump()
        lines += [f"~ rule {i}.{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]
    for name in sorted(old.tables.keys() | new.tables.keys()):
        if old.tables.get(name) != new.tables.get(name):
            lines.append(
                f"~ table {name}: {_size(old.tables.get(name))} -> "
                f"{_size(new.tables.get(name))} entries"
            )
    a, b = old.thresholds.model_dump(), new.thresholds.model_dump()
    lines += [f"~ thresholds.{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]
    return lines


def _size(table: Table | None) -> str:
    return "no table" if table is None else str(len(table))


def rollback_target(versions: Sequence[Strategy], current: Strategy) -> int:
    """The version a rollback from ``current`` restores: the newest before it that no
    rollback undid and that ``current`` does not restore, so each rollback steps further back."""
    replaced = {s.replaces for s in versions}
    undone = {
        current.version,
        current.restores,
        *replaced,
        *(s.restores for s in versions if s.version in replaced),
    }
    earlier = [
        s.version for s in versions if s.version < current.version and s.version not in undone
    ]
    if not earlier:
        raise StrategyError("no earlier version to roll back to: name one")
    return max(earlier)


def in_force(versions: Iterable[Strategy], event_time_ms: int) -> Strategy | None:
    """The version that decides an event of ``event_time_ms``: the newest in effect by then."""
    effective = [s for s in versions if s.effective_from <= event_time_ms]
    return max(effective, key=lambda s: s.version, default=None)
