"""Read a topic back and summarise it: how many messages and distinct transaction ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from services.kafka import read_topic
from services.settings import Settings


class _HasId(msgspec.Struct):
    transaction_id: str


_decode_id = msgspec.json.Decoder(_HasId).decode


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
        try:
            ids.add(_decode_id(value).transaction_id)
        except msgspec.DecodeError:
            not_json += 1
        if messages >= count:
            break
    return ReadSummary(topic, messages, len(ids), not_json)
