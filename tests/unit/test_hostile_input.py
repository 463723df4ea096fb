"""The decoder never raises, whatever the bytes; each hostile kind becomes its dead letter."""

from __future__ import annotations

import hashlib
import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.features import entities
from services.core.contract import InvalidEvent, Transaction, decode_record, decode_transaction
from services.core.dead_letters import dead_letter
from services.core.signals import parse_signals
from tests.hostile import CARD, CASES, Case, body

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
FIELDS = list(json.loads(body(0)))


@given(st.binary(max_size=4096))
def test_any_bytes_decode_to_a_value_never_an_exception(raw: bytes) -> None:
    assert isinstance(decode_transaction(raw), Transaction | InvalidEvent)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), JSON)
def test_any_json_in_any_field_decodes_to_a_value(field: str, value: object) -> None:
    raw = msgspec.json.encode(json.loads(body(1)) | {field: value})
    result = decode_transaction(raw)
    assert isinstance(result, Transaction | InvalidEvent)
    if isinstance(result, InvalidEvent):
        assert result.reason


@given(st.integers(min_value=0, max_value=1_000_000))
def test_every_valid_body_round_trips(i: int) -> None:
    result = decode_record(CARD.encode(), body(i))
    assert isinstance(result, Transaction)
    assert result.transaction_id == f"hostile-{i}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_kind_is_rejected_with_its_kind_and_field(case: Case) -> None:
    for i in (0, 7):
        key, value = case.make(i)
        result = decode_record(key, value)
        assert isinstance(result, InvalidEvent), case.name
        assert (result.kind, result.field) == (case.kind, case.field), result.reason


def test_the_table_has_at_least_twenty_kinds() -> None:
    assert len({c.name for c in CASES}) >= 20


def test_a_dead_letter_of_a_huge_value_is_bounded_and_identifies_it() -> None:
    key, value = next(c for c in CASES if c.name == "about 1 MiB").make(0)
    invalid = decode_record(key, value)
    assert isinstance(invalid, InvalidEvent)
    letter = dead_letter(invalid, value, key, ("transactions", 0, 5), raw_limit=4096)
    assert len(letter.raw) == 4096
    assert letter.raw_size == len(value) > 1 << 20
    assert len(msgspec.json.encode(letter)) < 8 * 1024
    assert letter.raw_sha256 == hashlib.sha256(value).hexdigest()


HOSTILE_SIGNALS = parse_signals("""
attributes:
  bin: {type: category}
  score: {type: number, min: -5, max: 5}
  flag: {type: boolean}
  opened: {type: timestamp}
entities: [{by: [bin]}, {by: [score, device_id]}]
""")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["bin", "score", "flag", "opened", "x"]) | st.text(),
                       JSON, max_size=6))  # fmt: skip
def test_any_attributes_are_judged_and_featured_never_an_exception(attributes: object) -> None:
    """Whatever a producer sends as attributes: decoded or refused, then checked against the
    signals file, and what passes has its features computed."""
    raw = msgspec.json.encode(json.loads(body(1)) | {"attributes": attributes})
    result = decode_transaction(raw)
    assert isinstance(result, Transaction | InvalidEvent)
    if isinstance(result, Transaction):
        problem = HOSTILE_SIGNALS.check(result)
        if problem is None:
            row = entities.attribute_row(HOSTILE_SIGNALS, result)
            assert len(row) == len(HOSTILE_SIGNALS.attributes)
            values = [entities.entity_value(e, result) for e in HOSTILE_SIGNALS.entities]
            assert all(v is None or isinstance(v, str) for v in values)
        else:
            assert problem.field.startswith("attributes")
