"""The signals file: what it accepts, what it refuses, and how it judges attributes."""

from __future__ import annotations

import msgspec
import pytest

from services.core.contract import InvalidEvent, Transaction, decode_transaction, encode
from services.core.signals import EMPTY, SignalsError, parse_signals
from services.core.tokens import TOKEN_PREFIX, Tokenizer

SIGNALS = parse_signals("""
attributes:
  card_bin: {type: category}
  email: {type: category, personal: true}
  risk: {type: number, min: 0, max: 100}
  three_ds: {type: boolean}
  opened: {type: timestamp}
entities:
  - by: [card_bin]
  - by: [device_id, card_bin]
""")


def _tx(attributes: dict[str, object] | None) -> Transaction:
    return Transaction(
        transaction_id="t1", event_time=1_772_323_200_000, card_id="c1", customer_id="u1",
        merchant_id="m1", merchant_category="5411", amount=20.0, currency="USD", country="US",
        channel="ecommerce",
        attributes=msgspec.UNSET if attributes is None else attributes,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_valid_file_declares_attributes_and_entities() -> None:
    assert list(SIGNALS.attributes) == ["card_bin", "email", "risk", "three_ds", "opened"]
    assert [e.name for e in SIGNALS.entities] == ["card_bin", "device_id_card_bin"]
    assert SIGNALS.personal == {"email"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("attributes: {age: {type: number, personal: true}}", "only a category can be personal"),
        ("attributes: {bin: {type: category, min: 1}}", "bounds apply to numbers only"),
        ("attributes: {n: {type: number, min: 5, max: 1}}", "min 5.0 is above max 1.0"),
        ("attributes: {Bad-Name: {type: number}}", "lower-case identifiers"),
        ("attributes: {x: {type: text}}", "attributes.x.type"),
        ("attributes: {x: {type: number, colour: red}}", "Extra inputs"),
        ("entities: [{by: [email_domain]}]", "neither a contract field"),
        ("entities: [{by: [a, b, c]}]", "at most 2 items"),
        ("attributes: [", "not YAML"),
        ("[" * 2_000 + "]" * 2_000, "nested too deeply"),
        ("entities: [{by: [device_id], windows: [1h, 1h]}]", "a value repeats"),
    ],
)
def test_a_bad_file_is_refused_with_the_problem_named(text: str, problem: str) -> None:
    with pytest.raises(SignalsError, match="signals: ") as refused:
        parse_signals(text)
    assert problem in str(refused.value)
    assert "\n" not in str(refused.value)


def test_every_problem_of_a_file_is_listed_at_once() -> None:
    with pytest.raises(SignalsError) as refused:
        parse_signals("attributes: {a: {type: text}, b: {type: number, colour: red}}")
    assert "attributes.a" in str(refused.value)
    assert "attributes.b" in str(refused.value)


@pytest.mark.parametrize(
    ("attributes", "field", "reason"),
    [
        ({"colour": "red"}, "attributes", "colour is not declared"),  # no producer's label
        ({"risk": "high"}, "attributes.risk", "expected a finite number"),
        ({"risk": True}, "attributes.risk", "expected a finite number"),
        ({"risk": 4111111111111111}, "attributes.risk", "looks like a card number"),
        ({"email": 5}, "attributes.email", "a personal value"),  # never echoed
        ({"risk": 101}, "attributes.risk", "above the declared max 100"),
        ({"opened": -2_300_000_000_000}, "attributes.opened", "out of range 1900..2100"),
        ({"risk": -1}, "attributes.risk", "below the declared min 0"),
        ({"card_bin": 411111}, "attributes.card_bin", "expected a string"),
        ({"card_bin": "41\x001"}, "attributes.card_bin", "control character U+0000"),
        ({"three_ds": "yes"}, "attributes.three_ds", "expected a boolean"),
        ({"opened": "yesterday"}, "attributes.opened", "RFC 3339"),
        ({"opened": 1.5}, "attributes.opened", "epoch ms or RFC 3339"),
    ],
)
def test_an_attribute_that_breaks_its_declaration_names_itself(
    attributes: dict[str, object], field: str, reason: str
) -> None:
    problem = SIGNALS.check(_tx(attributes))
    assert isinstance(problem, InvalidEvent)
    assert problem.field == field
    assert reason in problem.reason


def test_declared_attributes_of_their_types_pass_and_missing_ones_are_none() -> None:
    good = {"card_bin": "411111", "risk": 12.5, "three_ds": False, "opened": 1_600_000_000_000,
            "email": None}  # fmt: skip
    assert SIGNALS.check(_tx(good)) is None
    assert SIGNALS.check(_tx({"opened": "2020-01-01T00:00:00Z", "risk": 7})) is None
    assert SIGNALS.check(_tx(None)) is None


def test_without_a_signals_file_every_attribute_is_undeclared() -> None:
    problem = EMPTY.check(_tx({"card_bin": "411111"}))
    assert isinstance(problem, InvalidEvent)
    assert problem.field == "attributes"
    assert "card_bin" in problem.reason


def test_attribute_counts_and_sizes_are_bounded_at_decoding() -> None:
    base = msgspec.json.decode(encode(_tx(None)))
    for attributes, field in (
        ({f"a{i}": 1 for i in range(257)}, "attributes"),
        ({"x" * 49: 1}, "attributes"),
        ({"a": "v" * 257}, "attributes"),
        ({"a": {"nested": 1}}, "attributes"),
    ):
        decoded = decode_transaction(msgspec.json.encode(base | {"attributes": attributes}))
        assert isinstance(decoded, InvalidEvent), attributes
        assert decoded.field == field
    fine = decode_transaction(msgspec.json.encode(base | {"attributes": {"a": 1, "b": "x"}}))
    assert isinstance(fine, Transaction)
    assert fine.attributes == {"a": 1, "b": "x"}


def test_a_transaction_without_attributes_encodes_as_before() -> None:
    assert b"attributes" not in encode(_tx(None))


def test_a_number_beyond_what_a_model_input_holds_is_refused() -> None:
    unbounded = parse_signals("attributes: {n: {type: number}}")
    problem = unbounded.check(_tx({"n": 1e39}))  # float32 would make it infinite
    assert isinstance(problem, InvalidEvent)
    assert "beyond" in problem.reason


def test_a_card_number_among_category_attributes_becomes_a_token() -> None:
    tokens = Tokenizer(b"k" * 32, "t1")
    tx = _tx({"card_bin": "4111 1111 1111 1111"})  # a producer's mistake
    for cleaned in (tokens.foreign(tx), tokens.transaction(tx)):
        assert isinstance(cleaned.attributes, dict)
        assert str(cleaned.attributes["card_bin"]).startswith(TOKEN_PREFIX)


def test_personal_attributes_become_tokens_at_the_edge_and_in_the_job() -> None:
    tokens = Tokenizer(b"k" * 32, "t1")
    tx = _tx({"email": "jane@example.com", "card_bin": "411111"})
    published = tokens.transaction(tx, SIGNALS.personal)
    assert isinstance(published.attributes, dict)
    assert str(published.attributes["email"]).startswith(TOKEN_PREFIX)
    assert published.attributes["card_bin"] == "411111"
    # A foreign producer's clear value is tokenized by the job, to the same token...
    foreign = tokens.foreign(tx, SIGNALS.personal)
    assert foreign.attributes == published.attributes
    # ... and a token is left as it is.
    assert tokens.foreign(published, SIGNALS.personal) is published
