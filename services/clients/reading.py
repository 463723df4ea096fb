"""Read a topic back and summarise it: how many messages and distinct transaction ids."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from services.core.contract import decode_or_none
from services.core.kafka import read_topic
from services.core.settings import Settings


class _HasId(msgspec.Struct):
    transaction_id: str


_ids = msgspec.json.Decoder(_HasId)


@dataclass(frozen=True)
class ReadSummary:
    topic: str
    messages: int
    distinct_transaction_ids: int
    not_json: int


def read_summary(
    settings: Settings,
    topic: str,
    count: int,
    timeout: float,
    each: Callable[[bytes], None] | None = None,
) -> ReadSummary:
    """Read ``topic`` from the beginning until ``count`` messages or ``timeout`` seconds."""
    ids: set[str] = set()
    messages = not_json = 0
    for message in read_topic(settings, topic, lambda n: n >= count, timeout):
        value = message.value() or b""
        messages += 1
        if each is not None:
            each(value)
        tx_id = transaction_id(value)
        if tx_id is None:
            not_json += 1
        else:
            ids.add(tx_id)
        if messages >= count:
            break
    return ReadSummary(topic, messages, len(ids), not_json)


class Read(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_until_idle(
    settings: Settings, topic: str, idle_s: float = 3.0, timeout: float = 120.0
) -> list[Read]:
    """Every message of ``topic``, reading until none has arrived for ``idle_s`` (the broker's
    reported end offset can lag, so it is not trusted)."""
    got: list[Read] = []
    last = time.monotonic()

    def idle(_count: int) -> bool:
        return time.monotonic() - last > idle_s

    for message in read_topic(settings, topic, idle, timeout):
        got.append(Read(message.partition() or 0, message.offset() or 0, message.key(),
                        message.value() or b""))  # fmt: skip
        last = time.monotonic()
    return got


class Deduplicator:
    """Drops repeated transaction ids (the at-least-once topics repeat a few after a restart),
    remembering the last ``capacity`` ids."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, transaction_id: str) -> bool:
        if transaction_id in self._seen:
            return False
        self._seen[transaction_id] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def transaction_id(value: bytes) -> str | None:
    found = decode_or_none(_ids, value)
    return None if found is None else found.transaction_id
