"""Compare what went in with what came out: every valid transaction decided, every invalid
one dead-lettered, and how many decisions were repeated (at-least-once after a restart)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec

from services.clients.reading import read_until_idle, transaction_id
from services.core.contract import DeadLetter, InvalidEvent, decode_record
from services.core.settings import Settings

_dead_letter = msgspec.json.Decoder(DeadLetter).decode


@dataclass(frozen=True)
class Verification:
    transactions: int
    valid: int
    invalid: int
    decisions: int
    missing: int
    duplicates: int
    unexpected: int
    dead_letters: int
    invalid_not_dead_lettered: int

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.invalid_not_dead_lettered == 0


def verify(settings: Settings, idle_s: float = 3.0, timeout: float = 300.0) -> Verification:
    inputs = read_until_idle(settings, settings.topic.transactions, idle_s, timeout)
    valid: set[str] = set()
    invalid: set[tuple[int, int]] = set()
    for partition, offset, key, value in inputs:
        parsed = decode_record(key, value)
        if isinstance(parsed, InvalidEvent):
            invalid.add((partition, offset))
        else:
            valid.add(parsed.transaction_id)
    decided = Counter(
        transaction_id(value)
        for _, _, _, value in read_until_idle(settings, settings.topic.decisions, idle_s, timeout)
    )
    letters = [
        _dead_letter(v)
        for _, _, _, v in read_until_idle(settings, settings.topic.dlq, idle_s, timeout)
    ]
    lettered = {
        (d.partition, d.offset) for d in letters if d.source_topic == settings.topic.transactions
    }
    return Verification(
        transactions=len(inputs),
        valid=len(valid),
        invalid=len(invalid),
        decisions=sum(decided.values()),
        missing=len(valid - decided.keys()),
        duplicates=sum(n - 1 for n in decided.values()),
        unexpected=len(decided.keys() - valid),
        dead_letters=len(letters),
        invalid_not_dead_lettered=len(invalid - lettered),
    )
