"""A benchmark stopped by a signal stops what it started.

Python ends on SIGTERM or SIGHUP without running ``finally`` blocks, so a benchmark killed by
a CI timeout or a closed terminal would leave its broker, Redis, scoring service and PyFlink
job running. Turned into ``SystemExit`` here, the signal unwinds through every ``finally``
that stops a process (Ctrl-C already does, as ``KeyboardInterrupt``).
"""

from __future__ import annotations

import signal
from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _exit(signum: int, _frame: FrameType | None) -> None:
    for each in _SIGNALS:  # a second signal ends the benchmark at once, cleanup or not
        signal.signal(each, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def stop_on_signals() -> None:
    """Make SIGTERM, SIGHUP and SIGINT unwind the benchmark through its cleanup; a second
    one, during a cleanup that hangs, ends it."""
    for each in _SIGNALS:
        signal.signal(each, _exit)
