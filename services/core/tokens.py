"""Keyed tokens for identifiers, so card numbers and personal ids never travel in clear.

A token is ``tok_<key id>_<24 base32 characters>``: the first 120 bits of HMAC-SHA-256 over the
field's name and the value, with a secret key (``FRAUDSTREAM_TOKEN_KEY``). The same value always
gives the same token under one key, so features, blocklists and labels work on tokens exactly
as on raw ids; without the key a token cannot be reversed or recomputed (no dictionary attack
on the small space of card numbers). The key id in each token lets keys rotate: tokens of a new
key id start new histories.

The project's producer tokenizes every transaction before publishing
(:meth:`Tokenizer.transaction`); the stream job, as defence in depth, tokenizes any raw card
number (13 to 19 digits passing Luhn, contiguous or grouped by single spaces or dashes as
people write them) a foreign producer still sends (:meth:`Tokenizer.foreign`), and
:func:`mask_card_numbers` blanks them in dead letters. A card number has one token however it
is written. Analysts' tools name a card as the pipeline does (:meth:`Tokenizer.names`). IP
addresses are truncated (IPv4 to /24, IPv6 to /48) rather than tokenized: the contract keeps
``ip`` an address, and no feature needs the host part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Collection
from typing import Any, Final

import msgspec

from services.core.contract import AttributeValue, Transaction

TOKEN_PREFIX: Final = "tok_"
MIN_KEY_BYTES: Final = 32  # HMAC-SHA-256's own size: a shorter key weakens every token
MAX_CARD_DIGITS: Final = 19
MAX_CARD_CHARS: Final = 2 * MAX_CARD_DIGITS - 1  # with a separator between every digit
_PAN = re.compile(rb"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_WRITTEN_PAN = re.compile(r"[0-9](?:[ -]?[0-9]){12,18}")
_KEY_ID = re.compile(r"[a-z0-9]{1,8}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """13-19 digits of a payment card: its first digit 2 to 6 (Mastercard, American Express,
    Diners, JCB, Visa, Discover, UnionPay, Maestro) and passing Luhn. An epoch-milliseconds
    time (a 1 first until the year 2286) never looks like one."""
    return 13 <= len(digits) <= MAX_CARD_DIGITS and digits[0] in "23456" and luhn_valid(digits)


def card_digits(value: str) -> str | None:
    """The digits of ``value`` if it is a card number (``is_card_number``, maybe grouped by
    single spaces or dashes: ``4111 1111 1111 1111``), else None."""
    if len(value) > MAX_CARD_CHARS or not _WRITTEN_PAN.fullmatch(value):
        return None
    digits = value.replace(" ", "").replace("-", "")
    return digits if is_card_number(digits) else None


def looks_like_card_number(value: str) -> bool:
    return card_digits(value) is not None


def mask_card_numbers(raw: bytes) -> bytes:
    """``raw`` with every card number (contiguous or grouped) masked but its last four digits
    (separators kept), also where it runs into other digit groups (``4111... 12/25``)."""
    return _PAN.sub(lambda match: _masked(match.group()), raw)


def _masked(written: bytes) -> bytes:
    """Digits of one run of digit groups: each span of whole groups that is a card number
    masked, longest first."""
    groups = [(m.start(), m.end()) for m in re.finditer(rb"[0-9]+", written)]
    out = bytearray(written)
    for length in range(len(groups), 0, -1):
        for first in range(len(groups) - length + 1):
            start, end = groups[first][0], groups[first + length - 1][1]
            digits = bytes(c for c in out[start:end] if 48 <= c <= 57)
            if is_card_number(digits.decode()):
                keep = end - 4
                out[start:keep] = re.sub(rb"[0-9]", b"#", bytes(out[start:keep]))
    return bytes(out)


def truncate_ip(ip: str | None) -> str | None:
    """The network part of an address: IPv4 /24, IPv6 /48 (None and non-addresses as given)."""
    if ip is None:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address: the contract rejects it before anything else sees it
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


class Tokenizer:
    def __init__(self, key: bytes, key_id: str) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a token key needs at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        if not _KEY_ID.fullmatch(key_id):
            raise ValueError(f"a token key id is 1-8 lower-case letters or digits, got {key_id!r}")
        self._key, self._prefix = key, f"{TOKEN_PREFIX}{key_id}_"

    def token(self, field: str, value: str) -> str:
        """The token of ``value`` as a ``field`` (a token is returned unchanged; a card number
        has one token however it is grouped)."""
        if value.startswith(TOKEN_PREFIX):
            return value
        value = card_digits(value) or value
        mac = hmac.new(self._key, f"{field}\0{value}".encode(), hashlib.sha256).digest()
        return self._prefix + base64.b32encode(mac[:15]).decode().lower()

    def transaction(self, tx: Transaction, personal: Collection[str] = ()) -> Transaction:
        """``tx`` as the project's producer publishes it: every identifier a token, and every
        ``personal`` attribute."""
        device = tx.device_id
        return msgspec.structs.replace(
            tx, card_id=self.token("card", tx.card_id),
            customer_id=self.token("customer", tx.customer_id),
            device_id=None if device is None else self.token("device", device),
            ip=truncate_ip(tx.ip), attributes=self._attributes(tx.attributes, personal),
        )  # fmt: skip

    def foreign(self, tx: Transaction, personal: Collection[str] = ()) -> Transaction:
        """``tx`` with any raw card number among its ids tokenized, and its ``personal``
        attributes (from a foreign producer)."""
        fields = {"card_id": "card", "customer_id": "customer", "device_id": "device"}
        raw: dict[str, Any] = {
            name: self.token(field, value) for name, field in fields.items()
            if (value := getattr(tx, name)) and looks_like_card_number(value)
        }  # fmt: skip
        if tx.attributes and any(
            isinstance(v, str) and not v.startswith(TOKEN_PREFIX)
            and (n in personal or looks_like_card_number(v))
            for n, v in tx.attributes.items()
        ):  # fmt: skip
            raw["attributes"] = self._attributes(tx.attributes, personal)
        return msgspec.structs.replace(tx, **raw) if raw else tx

    def _attributes(
        self, attributes: dict[str, AttributeValue] | msgspec.UnsetType | None,
        personal: Collection[str],
    ) -> dict[str, AttributeValue] | msgspec.UnsetType | None:  # fmt: skip
        """Personal ones and any card number among them become tokens."""
        if not attributes:
            return attributes
        return {n: self.token(f"attr:{n}", v) if isinstance(v, str) and (
                    n in personal or looks_like_card_number(v)) else v
                for n, v in attributes.items()}  # fmt: skip

    def names(self, field: str, value: str) -> list[str]:
        """Every name the pipeline may know ``value`` by as a ``field``, likeliest first: its
        token (the project's producer tokenizes every id, the job every card number), and,
        unless it is a card number, the raw id itself (a foreign producer's own reference,
        which the job keeps as it is). A token is its own only name."""
        if value.startswith(TOKEN_PREFIX):
            return [value]
        token = self.token(field, value)
        return [token] if looks_like_card_number(value) else [token, value]
