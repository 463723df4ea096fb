"""A log that cannot flood: each kind of line at once, then at most one per interval with the
count of those held back, so a failure repeated a thousand times a second stays readable."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any


class ThrottledLog:
    """Warnings per kind: the first at once, then at most one per ``every_s``."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._log, self._every = logger, every_s
        self._since: Counter[str] = Counter()
        self._next: dict[str, float] = {}

    def warning(self, kind: str, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless ``kind`` was logged within the interval; whether it was.
        The line ends with how many of this kind happened since the last one logged."""
        self._since[kind] += 1
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            return False
        self._log.warning(message + "; %d of this kind since the last such line", *args,
                          self._since[kind])  # fmt: skip
        self._since[kind] = 0
        self._next[kind] = now + self._every
        return True
