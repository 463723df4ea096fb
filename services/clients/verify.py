"""Compare what went in with what came out: every valid transaction decided (or dead-lettered
by the job itself: dated too far ahead, say), every invalid one dead-lettered, and how many
decisions were repeated (after a restart, on an at-least-once path) and whether a repeat
differs from the first, which is the one that counts."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from services.clients.reading import read_until_idle
from services.core.contract import DeadLetter, Decision, InvalidEvent, decode_or_none, decode_record
from services.core.settings import Settings

_dead_letter = msgspec.json.Decoder(DeadLetter).decode
_decision = msgspec.json.Decoder(Decision)


@dataclass(frozen=True)
class Verification:
    transactions: int
    valid: int
    invalid: int
    decisions: int
    missing: int  # valid, and neither decided nor refused for being dated too far ahead
    duplicates: int  # repeated decisions (the first counts)
    conflicting: int  # of those, repeats whose outcome differs from the first
    unexpected: int
    dead_letters: int
    valid_dead_lettered: int  # valid by the contract, refused by the job (event_time_future)
    internal: int  # valid, and dead-lettered because the job failed on them (missing too)
    invalid_not_dead_lettered: int

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.invalid_not_dead_lettered == 0


def verify(settings: Settings, idle_s: float = 3.0, timeout: float = 300.0) -> Verification:
    inputs = read_until_idle(settings, settings.topic.transactions, idle_s, timeout)
    valid: dict[tuple[int, int], str] = {}  # (partition, offset) -> transaction id
    invalid: set[tuple[int, int]] = set()
    for partition, offset, key, value in inputs:
        parsed = decode_record(key, value)
        if isinstance(parsed, InvalidEvent):
            invalid.add((partition, offset))
        else:
            valid[(partition, offset)] = parsed.transaction_id
    first: dict[str, str] = {}  # transaction id -> its first decision's outcome
    duplicates = conflicting = decisions = 0
    for *_, value in read_until_idle(settings, settings.topic.decisions, idle_s, timeout):
        decision = decode_or_none(_decision, value)
        if decision is None:
            continue
        decisions += 1
        if decision.transaction_id in first:
            duplicates += 1
            conflicting += first[decision.transaction_id] != decision.decision
        else:
            first[decision.transaction_id] = decision.decision
    letters = [
        _dead_letter(v)
        for _, _, _, v in read_until_idle(settings, settings.topic.dlq, idle_s, timeout)
    ]
    ours = [d for d in letters if d.source_topic == settings.topic.transactions]
    lettered = {(d.partition, d.offset) for d in ours}
    by_kind: dict[str, set[tuple[int, int]]] = {}
    for d in ours:
        by_kind.setdefault(d.kind, set()).add((d.partition, d.offset))
    refused = {valid[w] for w in by_kind.get("event_time_future", set()) if w in valid}
    internal = {valid[w] for w in by_kind.get("internal", set()) if w in valid}
    ids = set(valid.values())
    return Verification(
        transactions=len(inputs),
        valid=len(ids),
        invalid=len(invalid),
        decisions=decisions,
        missing=len(ids - first.keys() - refused),
        duplicates=duplicates,
        conflicting=conflicting,
        unexpected=len(first.keys() - ids),
        dead_letters=len(letters),
        valid_dead_lettered=len(refused - first.keys()),
        internal=len(internal - first.keys()),
        invalid_not_dead_lettered=len(invalid - lettered),
    )
