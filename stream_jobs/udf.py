"""The vectorised Python function of the job: a pandas micro-batch in, one Decider call.

Flink hands the worker Arrow batches bounded by ``job_bundle_rows`` and ``job_bundle_ms``;
the batch is finished (outputs emitted) before any checkpoint barrier passes, so no event's
decision is ever held only in Python memory across a checkpoint. (What a worker holds during a
Redis outage is the recording of decided events in their cards' histories: lost, and
counted, if the worker stops before Redis is back.)
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from services.core.settings import Settings

RESULT_FIELDS = ("k", "d", "a", "q")  # output key, decision, alert, dead letter


def _epoch_ms(times: pd.Series) -> pd.Series:
    return pd.to_datetime(times, utc=True).dt.as_unit("ms").astype("int64")


class DecideFunction:
    """Built lazily in each worker (``open``): Redis, the scoring client, metrics, lag probe."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._decider: Any = None
        self._lag: Any = None
        self._feed: Any = None

    def open(self, _context: Any) -> None:
        from services.core.exposition import component_registry, serve_metrics
        from services.core.lag import LagProbe
        from services.scoring.client import ScoringClient
        from stream_jobs.decide import DecideOptions, Decider
        from stream_jobs.metrics import JobMetrics
        from stream_jobs.scorers import ServiceScorer
        from stream_jobs.strategy_feed import StrategyFeed

        s = self._settings
        metrics = JobMetrics(component_registry())
        options = DecideOptions.of(s)
        feed = self._feed = StrategyFeed(s, options.signals, metrics)
        feed.start()  # every version before the first decision, and before a port is held
        serve_metrics(metrics.registry, s.job.metrics_host, s.job.metrics_port)
        client = s.redis.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        scoring = ScoringClient(
            s.scoring.require_url(),
            s.scoring.bearer(),
            deadline_s=s.job.scoring_deadline_ms / 1000,
            cooldown_s=1.0,
        )
        states = {"closed": 0, "half_open": 1, "open": 2}
        metrics.breaker.set_function(lambda: states[scoring.breaker.state])
        self._decider = Decider(client, ServiceScorer(scoring, options.feature_names), options,
                                metrics, s.token.tokenizer(), lambda: feed.versions)  # fmt: skip
        self._lag = LagProbe(s, metrics.report_lag)

    def eval(self, key: pd.Series, value: pd.Series, partition: pd.Series, offset: pd.Series,
             read: pd.Series, timestamp: pd.Series) -> pd.DataFrame:  # fmt: skip
        """``read``: when the job read each record (its processing time at the source);
        ``timestamp``: the record's Kafka timestamp."""
        from stream_jobs.decide import Record

        columns = (key, value, partition, offset, _epoch_ms(read), _epoch_ms(timestamp))
        records = [Record(k, v, int(p), int(o), int(r), int(t))
                   for k, v, p, o, r, t in zip(*columns, strict=True)]  # fmt: skip
        outputs = self._decider.decide(records)
        topic = self._settings.topic.transactions
        self._lag.processed((topic, r.partition, r.offset) for r in records)
        return pd.DataFrame(
            {"k": [o.key for o in outputs], "d": [o.decision for o in outputs],
             "a": [o.alert for o in outputs], "q": [o.dead_letter for o in outputs]}
        )  # fmt: skip

    def close(self) -> None:
        if self._decider is not None:
            self._decider.close()
        if self._lag is not None:
            self._lag.close()
        if self._feed is not None:
            self._feed.close()


def decide_udf(settings: Settings) -> Any:
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class _Function(DecideFunction, ScalarFunction):  # type: ignore[misc]
        def is_deterministic(self) -> bool:
            return False  # side effects in Redis: never duplicate or fold the call

    row = DataTypes.ROW([DataTypes.FIELD(name, DataTypes.BYTES()) for name in RESULT_FIELDS])
    return udf(_Function(settings), result_type=row, func_type="pandas")
