"""Hostile transaction records, one kind a row: what an attacker or a broken producer sends.

Each case makes the i-th variant of its kind (distinct bytes per i, so every copy can be found
again by its SHA-256) with the dead letter it must become: its kind and failing field. The
decoder's unit tests and the stream job's end-to-end test use the same table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from services.core.contract import MAX_MESSAGE_BYTES

CARD = "c-hostile"
_BASE = {
    "event_time": 1_772_323_200_000, "card_id": CARD, "customer_id": "u-hostile",
    "merchant_id": "m-hostile", "merchant_category": "5411", "amount": 12.5, "currency": "USD",
    "country": "US", "channel": "ecommerce",
}  # fmt: skip


def body(i: int, **changes: object) -> bytes:
    """A transaction of id ``hostile-i``, valid unless ``changes`` make it not."""
    fields = {"transaction_id": f"hostile-{i}", **_BASE, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def _replace(i: int, old: bytes, new: bytes, **changes: object) -> bytes:
    raw = body(i, **changes)
    assert old in raw
    return raw.replace(old, new)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[int], tuple[bytes | None, bytes]]
    kind: str
    field: str
    copies: int = 100  # how many the end-to-end test sends


def _keyed(make: Callable[[int], bytes]) -> Callable[[int], tuple[bytes | None, bytes]]:
    return lambda i: (CARD.encode(), make(i))


CASES: list[Case] = [
    Case("not JSON", _keyed(lambda i: b"not json %d" % i), "malformed", "$"),
    Case("empty payload", lambda i: (b"k%d" % i, b""), "malformed", "$"),
    Case("invalid UTF-8 in a known field", _keyed(lambda i: _replace(
        i, b'"u-hostile"', b'"\xff\xfe"')), "malformed", "$"),
    Case("invalid UTF-8 in an unknown field", _keyed(lambda i: _replace(
        i, b'"zz": "x"', b'"zz": "\xc3\x28"', zz="x")), "malformed", "$"),
    Case("JSON nested 1,000 deep", _keyed(lambda i: b'{"a%d":' % i + b'{"x":' * 1000 + b"1"
                                          + b"}" * 1001), "malformed", "$"),
    Case("NaN token", _keyed(lambda i: _replace(i, b"12.5", b"NaN")), "malformed", "$"),
    Case("about 1 MiB", _keyed(lambda i: body(i, note="x" * (1 << 20))), "oversize", "$",
         copies=5),
    Case("just over the limit", _keyed(lambda i: body(i, note="x" * MAX_MESSAGE_BYTES)),
         "oversize", "$", copies=20),
    Case("JSON array", _keyed(lambda i: json.dumps(["hostile", i]).encode()), "invalid", "$"),
    Case("JSON null", _keyed(lambda i: b"null" + b" " * i), "invalid", "$"),
    Case("missing amount", _keyed(lambda i: body(i, amount=...)), "invalid", "amount"),
    Case("card_id a number", lambda i: (b"123", body(i, card_id=123)), "invalid", "card_id"),
    Case("negative amount", _keyed(lambda i: body(i, amount=-1 - i)), "invalid", "amount"),
    Case("amount 1e999", _keyed(lambda i: _replace(i, b"12.5", b"1e999")), "invalid", "amount"),
    Case("unknown currency", _keyed(lambda i: body(i, currency="XXQ")), "invalid", "currency"),
    Case("MCC with a trailing newline", _keyed(lambda i: body(i, merchant_category="5411\n")),
         "invalid", "merchant_category"),
    Case("MCC in Arabic-Indic digits", _keyed(lambda i: body(i, merchant_category="٥٤١١")),
         "invalid", "merchant_category"),
    Case("IP with a trailing newline", _keyed(lambda i: body(i, ip="10.0.0.1\n")), "invalid",
         "ip"),
    Case("ISO week date", _keyed(lambda i: body(i, event_time="2026-W09-1T00:00:00Z")),
         "invalid", "event_time"),
    Case("time without an offset", _keyed(lambda i: body(i, event_time="2026-03-01T00:00:00")),
         "invalid", "event_time"),
    Case("epoch seconds", _keyed(lambda i: body(i, event_time=1_772_323_200 + i)), "invalid",
         "event_time"),
    Case("NUL in card_id", lambda i: (b"c\x00x", body(i, card_id="c\x00x")), "invalid",
         "card_id"),
    Case("escape in transaction_id", _keyed(lambda i: body(i, transaction_id=f"\x1b[2J{i}")),
         "invalid", "transaction_id"),
    Case("lat without lon", _keyed(lambda i: body(i, lat=10.0)), "invalid", "lon"),
    Case("no Kafka key", lambda i: (None, body(i)), "key_mismatch", "key"),
    Case("a key that is not the card_id", lambda i: (b"someone-else", body(i)), "key_mismatch",
         "key"),
]  # fmt: skip
