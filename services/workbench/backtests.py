"""Backtests from the strategy page: a candidate against the version in force over the lake's
recent days, replayed by ``stream_jobs.backtest`` (the code behind ``fraudstream backtest``)
in a worker process, so pandas and ONNX Runtime never hold the page's event loop; the report
(one self-contained HTML page, charts inline) is kept in the case store, where every replica
finds it."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.workbench.cases import Backtest, now

DAYS_MAX: Final = 31  # what a page request may replay; longer ranges: `fraudstream backtest`


@dataclass(frozen=True)
class Request:
    registry: Path
    lake: Path
    candidate: str  # the document as pasted (checked already)
    active: str  # the version in force, as JSON
    active_name: str
    start_ms: int
    end_ms: int  # exclusive
    maturity_days: float  # older and unlabelled counts as legit


def replay(request: Request) -> str:
    """The report page; a BacktestError says why there is none (run in the worker)."""
    from models.training.registry import Registry
    from stream_jobs import backtest as bt
    from stream_jobs import strategy as st
    from stream_jobs.backtest_report import render

    registry = Registry(request.registry)
    version = registry.current()
    if version is None:
        raise bt.BacktestError("no model version in the registry")
    window = bt.Range(request.start_ms, request.end_ms)
    scored = bt.scored(registry, version, request.lake, window, None, request.maturity_days)
    named = [("the candidate", st.parse(request.candidate, "the candidate")),
             (request.active_name, st.parse(request.active, request.active_name))]  # fmt: skip
    return render(bt.report(scored, window, named, None, version, "the lake"))


class Runner:
    """One worker process for the page's backtests, started at the first; each result (or
    the reason there is none) is written to its row when the worker is done."""

    def __init__(self, store: Engine) -> None:
        self.store = store
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, backtest_id: int, request: Request) -> None:
        with self._lock:
            if self._pool is None:
                spawn = multiprocessing.get_context("spawn")  # no forked copy of the server
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=spawn)
            pool = self._pool
            future = pool.submit(replay, request)
        future.add_done_callback(lambda done: self._record(backtest_id, done, pool))

    def _record(self, backtest_id: int, done: Future[str], pool: ProcessPoolExecutor) -> None:
        if isinstance(done.exception(), BrokenProcessPool):  # the worker died (out of memory?)
            with self._lock:
                if self._pool is pool:
                    self._pool = None  # the next backtest starts a new one
        with Session(self.store) as session, session.begin():
            row = session.get(Backtest, backtest_id)
            if row is None:
                return
            try:
                row.report = done.result()
            except BrokenProcessPool:
                row.error = "the backtest's worker process died (out of memory?): try fewer days"
            except Exception as error:  # the row must end: the reason is shown
                row.error = str(error) or type(error).__name__
            row.finished_at = now()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
