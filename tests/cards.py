"""Card numbers for the tests that look for them: Luhn-valid test numbers, the ways people
write them, and scans of Redis and text for any of them in clear."""

from __future__ import annotations

import random
from collections.abc import Iterable

import redis

from services.core.tokens import luhn_valid


def card_number(rng: random.Random) -> str:
    stem = "4" + "".join(str(rng.randrange(10)) for _ in range(14))
    return next(stem + d for d in "0123456789" if luhn_valid(stem + d))


def grouped(pan: str, separator: str) -> str:
    return separator.join(pan[i : i + 4] for i in range(0, len(pan), 4))


def found(text: bytes, pans: Iterable[str]) -> set[str]:
    """The card numbers ``text`` holds, contiguous or grouped by spaces or dashes."""
    return {pan for pan in pans
            if any(form.encode() in text for form in (pan, grouped(pan, " "),
                                                       grouped(pan, "-")))}  # fmt: skip


def _redis_value(client: redis.Redis, key: bytes) -> object:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key)
    if kind == b"hash":
        return client.hgetall(key)
    if kind == b"zset":
        return client.zrange(key, 0, -1)
    return client.dump(key)  # any other type, serialized


def redis_dump(client: redis.Redis) -> bytes:
    """Every key and value of the database, as text to search."""
    keys: list[bytes] = list(client.scan_iter(count=1000))
    return b"\n".join(key + b"=" + repr(_redis_value(client, key)).encode() for key in keys)
