"""Identifier tokens: keyed, stable, separated by field, idempotent; card numbers found."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.contract import Transaction
from services.core.tokens import (
    Tokenizer,
    is_card_number,
    looks_like_card_number,
    luhn_valid,
    mask_card_numbers,
    truncate_ip,
)

KEY = bytes(range(32))
TOKENS = Tokenizer(KEY, "k1")
PAN = "4111111111111111"  # a test card number (Luhn-valid)
TX = Transaction(
    transaction_id="t1", event_time=1_772_323_200_000, card_id=PAN, customer_id=PAN,
    merchant_id="m1", merchant_category="5411", amount=25.0, currency="USD", country="US",
    channel="card_present", device_id="dev-7", ip="203.0.113.77",
)  # fmt: skip


def test_a_token_is_stable_keyed_and_separated_by_field() -> None:
    card = TOKENS.token("card", PAN)
    assert card == TOKENS.token("card", PAN)
    assert card.startswith("tok_k1_")
    assert PAN not in card
    assert card != TOKENS.token("customer", PAN)  # the same number as another field
    assert card != Tokenizer(bytes(32), "k1").token("card", PAN)  # another key
    assert Tokenizer(KEY, "k2").token("card", PAN).startswith("tok_k2_")
    assert TOKENS.token("card", card) == card  # a token is kept as it is


def test_the_producer_view_tokenizes_every_identifier_and_truncates_the_ip() -> None:
    published = TOKENS.transaction(TX)
    assert published.card_id == TOKENS.token("card", PAN)
    assert published.customer_id == TOKENS.token("customer", PAN)
    assert published.device_id == TOKENS.token("device", "dev-7")
    assert published.ip == "203.0.113.0"
    assert TOKENS.transaction(published) == published  # twice is once


def test_the_job_view_tokenizes_only_card_numbers() -> None:
    seen = TOKENS.foreign(TX)
    assert seen.card_id == TOKENS.token("card", PAN)
    assert seen.device_id == "dev-7"  # not a card number: a foreign producer's own id
    plain = TOKENS.foreign(msgspec.structs.replace(TX, card_id="c1", customer_id="u1"))
    assert (plain.card_id, plain.customer_id) == ("c1", "u1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(PAN, True), ("4111111111111112", False), ("411111111111", False), ("4" * 20, False),
     ("4111 1111 1111 1111", True), ("4111-1111-1111-1111", True), ("3782 822463 10005", True),
     ("4111  1111 1111 1111", False), ("4111 1111 1111 1112", False), (" 4111111111111111", False),
     ("٤١١١١١١١١١١١١١١١", False), ("79927398713", False), ("5500005555555559", True),
     ("378282246310005", True)],
)  # fmt: skip
def test_card_numbers_are_luhn_valid_13_to_19_ascii_digits_maybe_grouped(
    value: str, expected: bool
) -> None:
    assert looks_like_card_number(value) is expected


def test_masking_keeps_the_last_four_digits_of_card_numbers_only() -> None:
    raw = b'{"card_id": "4111111111111111", "amount": 4111111111111112, "n": 123}'
    assert mask_card_numbers(raw) == (
        b'{"card_id": "############1111", "amount": 4111111111111112, "n": 123}'
    )
    grouped = b'{"card_id": "4111 1111 1111 1111", "x": "4111-1111-1111-1111"}'
    assert mask_card_numbers(grouped) == (
        b'{"card_id": "#### #### #### 1111", "x": "####-####-####-1111"}'
    )


@pytest.mark.parametrize(
    "text",
    [b"4111111111111111 12/25", b"12 4111111111111111", b"4111 1111 1111 1111 5",
     b"cvv 123-4111-1111-1111-1111"],
)  # fmt: skip
def test_a_card_number_beside_other_digit_groups_is_masked_too(text: bytes) -> None:
    masked = mask_card_numbers(text)
    assert b"1111" in masked  # the last four stay
    assert b"4111" not in masked.replace(b" ", b"").replace(b"-", b"")


def test_a_card_number_has_one_token_however_it_is_written() -> None:
    """On cdc8e54 a grouped number passed the job in clear into keys, Redis and the lake."""
    for written in ("4111 1111 1111 1111", "4111-1111-1111-1111"):
        tx = msgspec.structs.replace(TX, card_id=written, customer_id=written)
        assert TOKENS.foreign(tx).card_id == TOKENS.token("card", PAN)
        assert TOKENS.transaction(tx).card_id == TOKENS.token("card", PAN)


def test_analysts_name_a_card_as_the_pipeline_does() -> None:
    """A foreign producer's own card reference is kept raw by the job; a card number becomes
    its token; the project's producer tokenizes both: the names cover each case."""
    assert TOKENS.names("card", "4111 1111 1111 1111") == [TOKENS.token("card", PAN)]
    assert TOKENS.names("card", "bank-ref-9") == [TOKENS.token("card", "bank-ref-9"), "bank-ref-9"]
    token = TOKENS.token("card", "x")
    assert TOKENS.names("card", token) == [token]


@given(st.integers(min_value=10**12, max_value=10**19 - 1))
def test_masking_leaves_no_card_number(number: int) -> None:
    masked = mask_card_numbers(b"x%dy" % number)
    digits = masked[1:-1].decode()
    assert not (digits.isdigit() and is_card_number(digits))


def test_ips_keep_their_network_only() -> None:
    assert truncate_ip("198.51.100.42") == "198.51.100.0"
    assert truncate_ip("2001:db8:abcd:12::1") == "2001:db8:abcd::"
    assert truncate_ip(None) is None


def test_a_short_key_or_a_bad_key_id_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Tokenizer(b"short", "k1")
    with pytest.raises(ValueError, match="32 bytes, got 16"):
        Tokenizer(bytes(16), "k1")  # what the docs never allowed, once accepted
    with pytest.raises(ValueError, match="key id"):
        Tokenizer(KEY, "K 1")


def test_an_epoch_milliseconds_time_is_never_masked_as_a_card_number() -> None:
    """1764950000000 passes Luhn like one number in ten: a disposition's time in a dead letter
    was masked into invalid JSON. Card numbers start with 2 to 6; times with 1 until 2286."""
    times = [t for t in range(1_764_950_000_000, 1_764_950_000_100) if luhn_valid(str(t))]
    assert times  # the negative control: such times exist
    for t in times:
        raw = f'{{"time":{t},"card":"4111111111111111"}}'.encode()
        masked = mask_card_numbers(raw)
        assert str(t).encode() in masked
        assert b"4111111111111111" not in masked
