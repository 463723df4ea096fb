"""Lake writes that never drop a batch: retried while the disk refuses, counted in metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from models.lake import tables as lk
from services.core.throttled_log import ThrottledLog
from stream_jobs.feedback.metrics import FeedbackMetrics

BATCH_ROWS = 10_000  # the most rows one append gathers
RETRY_S = 1.0
_warnings = ThrottledLog(logging.getLogger(__name__))


def append_until_written(
    lake: lk.Lake,
    table: lk.Table,
    records: Sequence[lk.Sourced],
    metrics: FeedbackMetrics,
    stop: threading.Event | None = None,
) -> None:
    """Append, retrying every RETRY_S on OSError (a full disk, say) until written or ``stop``
    is set: the caller acknowledges its records once this returns."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            appended = lake.append(table, records)
        except OSError as error:
            metrics.lake_errors.labels(table).inc()
            _warnings.warning(table, "lake %s: %s; retrying every %.0f s", table, error, RETRY_S)
            stop.wait(RETRY_S)
            continue
        metrics.lake_files.labels(table).inc(appended.files)
        metrics.lake_rows.labels(table).inc(appended.rows)
        return
