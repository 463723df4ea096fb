"""Dead letters: bounded copies of what could not be used, and a log that cannot flood.

The raw bytes are kept up to a limit (``FRAUDSTREAM_DLQ_RAW_BYTES``) with their full size and
SHA-256, so a 1 MiB message makes a dead letter of a few KiB that every sink accepts. The log
says each kind once, then at most once per interval with the count since: a flood of bad input
stays readable at 3 a.m. Nothing of the raw value is logged, and card numbers a foreign producer
sent are masked in the dead letter itself (all but their last four digits).
"""

from __future__ import annotations

import hashlib
import logging
import time

from services.core.contract import DeadLetter, InvalidEvent
from services.core.throttled_log import ThrottledLog
from services.core.tokens import MAX_CARD_DIGITS, mask_card_numbers

MAX_KEY_BYTES = 256  # of a dead letter's Kafka key, kept for diagnosis
MAX_REASON_CHARS = 1000


def dead_letter(
    invalid: InvalidEvent, raw: bytes, key: bytes | None, source: tuple[str, int, int],
    raw_limit: int,
) -> DeadLetter:  # fmt: skip
    """A dead letter of bounded size for ``raw`` read at (topic, partition, offset)."""
    topic, partition, offset = source
    reason = _masked_prefix(invalid.reason.encode(), MAX_REASON_CHARS).decode(errors="replace")
    return DeadLetter(
        kind=invalid.kind, field=invalid.field, reason=reason,
        raw=_masked_prefix(raw, raw_limit), raw_size=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        key=None if key is None else _masked_prefix(key, MAX_KEY_BYTES), source_topic=topic,
        partition=partition, offset=offset, failed_at=int(time.time() * 1000),
    )  # fmt: skip


def _masked_prefix(data: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes, card numbers masked: masked before the cut (a number across
    it is masked whole), on a window just past it (a 1 MiB value is not scanned whole)."""
    return mask_card_numbers(data[: limit + MAX_CARD_DIGITS])[:limit]


class DeadLetterLog:
    """A warning per dead-letter kind: the first at once, then at most one per ``every_s``."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._log = ThrottledLog(logger, every_s)

    def record(self, letter: DeadLetter) -> None:
        self._log.warning(
            letter.kind, "dead letter (%s) %s/%d@%d field %s: %s [sha256 %s, %d bytes]",
            letter.kind, letter.source_topic, letter.partition, letter.offset, letter.field,
            letter.reason, letter.raw_sha256[:16], letter.raw_size,
        )  # fmt: skip
