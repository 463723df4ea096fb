"""One micro-batch of raw Kafka records in, a decision (and maybe an alert or a dead letter)
per record out: the stream job's whole per-event logic, free of Flink so that the job, the
pure-Python baseline and the tests run the very same code.

Per batch: decode and validate (an event dated too far ahead of the clock is a dead letter,
``event_time_future``: it could otherwise pose as the card's latest activity); two pipelined
Redis round trips for features, blocklists and recording (``models.online.store``); one scoring
call; rules and the model's thresholds. Redis or scoring failing degrades the decision (listed in
``degraded``) instead of failing the batch, the failure policy decides what a degraded decision
may be (``rules.FailurePolicy``: fail closed by default), and both are retried on the next
batch. Events decided while Redis was out are recorded in their cards' histories once it is
back (up to ``DecideOptions.unrecorded_max`` of them, counted), so the history matches what
training computes offline.

Time comes from validated events only: each partition's watermark (for the late-event count)
is the latest valid event time seen there less the allowed out-of-orderness, and a decision's
latency runs from the job's own read of the record, never from the producer-settable Kafka
timestamp (which only dates the consumer lag, and never from the future).

Nothing a record holds can fail its batch or its partition: decoding never raises, a record
whose Kafka key is not its card_id is a dead letter (``key_mismatch``), and any other failure
is isolated by deciding the halves of the batch again until the record that fails alone is a
dead letter of kind ``internal`` naming the exception.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self

import msgspec
from prometheus_client import CollectorRegistry

from models.features import definitions as f
from models.features.entities import serving_names
from models.online.lists import BIN_ATTRIBUTE, Kind, ListCache
from models.online.ops import is_transient
from models.online.store import Looked, OnlineFeatureStore, without_history
from services.core.contract import (
    Alert,
    Decision,
    InvalidEvent,
    Transaction,
    decode_record,
    encode,
)
from services.core.dead_letters import DeadLetterLog, dead_letter
from services.core.settings import RedisClient, Settings
from services.core.signals import EMPTY, Signals, load_signals
from services.core.throttled_log import ThrottledLog
from services.core.tokens import Tokenizer
from services.scoring.client import ScoringRejected, ScoringUnavailable
from services.scoring.wire import RowResult, ScoreResponse
from stream_jobs import rules, thresholds
from stream_jobs import strategy as st
from stream_jobs.metrics import JobMetrics
from stream_jobs.strategy_feed import Versions

log = logging.getLogger(__name__)
NO_MODEL = "none"  # model_version of a rules-only decision
REDIS_RETRY_S = 0.5  # after a Redis failure, batches skip Redis this long before trying again
RECORD_CHUNK = 500  # unrecorded events written back per Redis call once it answers again
RECORD_PER_BATCH = 2_000  # at most this many with each batch: a backlog never stalls one
_AMOUNT_USD = f.FEATURE_NAMES.index("amount_usd")


class RowScorer(Protocol):
    """Scores rows of features in ``FEATURE_NAMES`` order (the service, or in-process)."""

    def score(self, rows: Sequence[list[float]]) -> ScoreResponse: ...


@dataclass(frozen=True)
class DecideOptions:
    """How the decider treats its input and its dependencies (``FRAUDSTREAM_JOB_*``)."""

    source_topic: str = "transactions"
    raw_limit: int = 4096  # raw bytes a dead letter keeps
    policy: rules.FailurePolicy = field(default_factory=rules.FailurePolicy)
    max_ahead_ms: int = 600_000  # how far past the job's clock an event time may be
    out_of_orderness_ms: int = 5_000  # behind a partition's latest valid event time: late
    merchant_cache_s: float = 60.0
    replay_horizon_s: float = 300.0
    unrecorded_max: int = 50_000  # events decided without Redis, held to be recorded later
    signals: Signals = EMPTY  # the attributes transactions may carry, and the entities
    workers: int = 1  # the job's parallelism: the alert budget is shared by this many
    review_sample_rate: float = 0.0  # approved transactions also sent to review at random

    @classmethod
    def of(cls, settings: Settings) -> Self:
        job = settings.job
        return cls(
            settings.topic.transactions, settings.dlq.raw_bytes,
            rules.FailurePolicy(job.redis_down_review_usd, job.scoring_down_review_usd),
            job.max_event_ahead_s * 1000, job.out_of_orderness_ms, job.merchant_cache_s,
            job.replay_horizon_s, job.unrecorded_max, load_signals(settings.model.signals),
            job.parallelism, job.review_sample_rate,
        )  # fmt: skip

    @property
    def feature_names(self) -> tuple[str, ...]:
        return serving_names(self.signals)


@dataclass(frozen=True)
class Record:
    """A raw Kafka record, where it came from and when."""

    key: bytes | None
    value: bytes
    partition: int
    offset: int
    read_ms: int  # when the job read it: a decision's latency starts here
    timestamp_ms: int | None = None  # its Kafka timestamp (producer-settable): lag only


@dataclass
class Output:
    """What one record produces: (topic, key, value) messages."""

    key: bytes | None
    decision: bytes | None = None
    alert: bytes | None = None
    dead_letter: bytes | None = None


@dataclass
class _Valid:
    index: int
    record: Record
    tx: Transaction
    degraded: list[str] = field(default_factory=list)


def _reply_problem(response: ScoreResponse, rows: int) -> str | None:
    """What makes a scoring reply unusable, or None: a row count or a score out of bounds."""
    if len(response.results) != rows:
        return f"{len(response.results)} results for {rows} rows"
    if not all(math.isfinite(r.score) and 0.0 <= r.score <= 1.0 for r in response.results):
        return "a score outside 0..1"
    if not all(r.probability == -1.0 or 0.0 <= r.probability <= 1.0 for r in response.results):
        return "a probability outside 0..1"  # NaN included
    return None


def _usable_shadow(scores: Sequence[float], rows: int) -> bool:
    """A shadow's reply is recorded only whole and within bounds: never a wrong row's."""
    return len(scores) == rows and all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in scores)


def _constant(versions: Versions) -> Callable[[], Versions]:
    return lambda: versions


def _probability(result: RowResult) -> float:
    """The calibrated fraud probability (the score of a model without calibration)."""
    return result.score if result.probability < 0 else result.probability


def _list_values(tx: Transaction) -> dict[Kind, object]:
    attributes = tx.attributes or {}
    return {"card": tx.card_id, "device": tx.device_id, "merchant": tx.merchant_id,
            "bin": attributes.get(BIN_ATTRIBUTE), "country": tx.country}  # fmt: skip


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Decider:
    def __init__(
        self,
        redis_client: RedisClient,
        scorer: RowScorer,
        options: DecideOptions = DecideOptions(),
        metrics: JobMetrics | None = None,
        tokens: Tokenizer | None = None,
        versions: Callable[[], Versions] | None = None,
    ) -> None:
        """``tokens``: tokenize raw card numbers a foreign producer sends (defence in depth);
        ``versions``: the strategy versions in force now (a ``StrategyFeed``'s), else the
        shipped default alone."""
        self._options = options
        self._store = OnlineFeatureStore(
            redis_client, options.merchant_cache_s, options.replay_horizon_s, options.signals
        )
        self._scorer = scorer
        self._metrics = metrics or JobMetrics(CollectorRegistry())  # unserved when not given
        self._tokens = tokens
        self._personal = options.signals.personal
        self._names = options.feature_names  # a decision's features, by name
        self._letters = DeadLetterLog(log)
        self._warnings = ThrottledLog(log)
        self._redis_retry_at = 0.0
        self._unrecorded: list[Transaction] = []  # decided without Redis, oldest first
        self._latest: dict[int, int] = {}  # per partition, the latest valid event time
        self._versions = versions or _constant(
            Versions([st.Compiled(st.default(), options.signals)])
        )
        self._lists = ListCache(redis_client)
        self._budget = thresholds.AlertBudget(st.Thresholds(), options.workers)
        self._counted: Versions | None = None  # whose rules have their series

    def decide(self, records: Sequence[Record]) -> list[Output]:
        started = time.perf_counter()
        outputs = [Output(key=r.key) for r in records]
        valid: list[_Valid] = []
        now = _wall_ms()
        ahead = self._options.max_ahead_ms
        for i, record in enumerate(records):
            parsed = decode_record(record.key, record.value)
            if not isinstance(parsed, InvalidEvent) and parsed.event_time_ms > now + ahead:
                parsed = InvalidEvent(
                    "event_time", f"{(parsed.event_time_ms - now) // 1000} s ahead of the job's "
                    f"clock (at most {ahead // 1000} s)", "event_time_future",
                )  # fmt: skip
            elif not isinstance(parsed, InvalidEvent) and parsed.attributes:
                parsed = self._options.signals.check(parsed) or parsed
            if isinstance(parsed, InvalidEvent):
                outputs[i] = self._dead_letter(record, parsed)
            else:
                tx = self._tokens.foreign(parsed, self._personal) if self._tokens else parsed
                valid.append(_Valid(i, record, tx))
        if valid:
            self._decide_isolating(valid, outputs)
        self._count(records, valid)
        self._metrics.batch.observe(time.perf_counter() - started)
        return outputs

    def _decide_isolating(self, valid: list[_Valid], outputs: list[Output]) -> None:
        """Decide ``valid``; if that fails, decide each half again, down to the single record
        that fails alone, which becomes a dead letter (kind ``internal``)."""
        try:
            self._decide_valid(valid, outputs)
        except Exception as error:  # the last resort: one record never fails its batch
            for v in valid:
                outputs[v.index] = Output(key=None)  # what the failed attempt wrote is void
            if len(valid) == 1:
                v = valid[0]
                log.debug("record %d@%d failed the decider", v.record.partition, v.record.offset,
                          exc_info=True)  # fmt: skip
                reason = f"{type(error).__name__}: {error}"
                outputs[v.index] = self._dead_letter(
                    v.record, InvalidEvent("$", reason, "internal")
                )
                return
            middle = len(valid) // 2
            for half in (valid[:middle], valid[middle:]):
                self._decide_isolating([_Valid(v.index, v.record, v.tx) for v in half], outputs)

    def _decide_valid(self, valid: list[_Valid], outputs: list[Output]) -> None:
        txs = [v.tx for v in valid]
        looked = self._features(txs)
        if looked is None:
            rows = [without_history(tx, self._options.signals) for tx in txs]
            blocked = [(False, False)] * len(txs)
            for v in valid:
                v.degraded.append("redis")
        else:
            rows = looked.rows
            blocked = list(zip(looked.card_blocked, looked.device_blocked, strict=True))
        scored = self._score(rows)
        response = None if isinstance(scored, str) else scored
        if isinstance(scored, str):  # why there are no scores: the degraded reason
            for v in valid:
                v.degraded.append(scored)
        decided_at = _wall_ms()
        decisions: list[Decision] = []
        errors: list[str] = []
        losses: list[float] = []
        versions = self._versions()
        if versions is not self._counted:
            self._count_series(versions)
        in_force = versions.for_event(valid[-1].tx.event_time_ms).thresholds
        self._budget.use(in_force)
        bar = self._budget.refresh(time.time())
        if response is not None and in_force.mode == "model":
            self._metrics.thresholds.labels("review").set(response.review_threshold)
            self._metrics.thresholds.labels("decline").set(response.decline_threshold)
        for j, (v, row, flags) in enumerate(zip(valid, rows, blocked, strict=True)):
            compiled = versions.for_event(v.tx.event_time_ms)
            result = None if response is None else response.results[j]
            decision = self._decision(v, compiled, row, flags, result, response, j, errors,
                                      decided_at, losses)  # fmt: skip
            out = outputs[v.index]
            out.key = v.tx.card_id.encode()
            out.decision = encode(decision)
            if decision.decision != "approve" or rules.REVIEW_SAMPLE in decision.reasons:
                out.alert = encode(Alert(**msgspec.structs.asdict(decision), transaction=v.tx))
            decisions.append(decision)
        for decision in decisions:  # counted once the whole batch is decided (never twice)
            self._observe(decision)
        for rule in errors:
            self._metrics.rule_errors.labels(rule).inc()
        self._budget.observe(losses, time.time())
        self._metrics.strategy_version.set(versions.all[0].version)
        self._metrics.review_bar.set(bar)

    def _decision(
        self,
        v: _Valid,
        compiled: st.Compiled,
        row: list[float],
        blocked: tuple[bool, bool],
        result: RowResult | None,
        response: ScoreResponse | None,
        index: int,
        errors: list[str],
        decided_at: int,
        losses: list[float],
    ) -> Decision:
        """One event's decision: the strategy's rules, the lists, the model by the strategy's
        thresholds, and the failure policy; the most severe outcome wins."""
        amount_usd = row[_AMOUNT_USD]
        model: rules.Outcome = "approve"
        score, probability, version, reasons = 0.0, None, NO_MODEL, list[str]()
        if response is not None and result is not None:
            score, version = result.score, response.model_version
            probability = _probability(result)
            model = self._model_outcome(compiled.thresholds, response, score, probability,
                                        amount_usd, losses)  # fmt: skip
            reasons = [f"model:{name}" for name in result.reasons]
        fired = compiled.evaluate(row, v.tx, None if result is None else score, probability)
        errors += fired.errors
        hits = self._lists.hits(_list_values(v.tx), decided_at)
        blocks: list[tuple[str, rules.Outcome]] = [(code, "decline") for code in (
            *([rules.BLOCKLIST_CARD] if blocked[0] else []),
            *([rules.BLOCKLIST_DEVICE] if blocked[1] else []), *hits.block)]  # fmt: skip
        if model == "review" and hits.allow and not blocks:
            model, reasons = "approve", [*reasons, *hits.allow]  # spared the model's review
        acted = blocks + fired.active
        policy = rules.when_degraded(v.degraded, amount_usd, self._options.policy)
        shadow = None if response is None else response.shadow
        outcome = rules.combine(model, acted + policy)
        rate = 1.0 if outcome != "approve" else self._options.review_sample_rate
        sampled = outcome == "approve" and rules.in_review_sample(v.tx.transaction_id, rate)
        return Decision(
            transaction_id=v.tx.transaction_id, card_id=v.tx.card_id,
            event_time=v.tx.event_time_ms, decided_at=decided_at, score=score,
            decision=outcome,
            reasons=[code for code, _ in acted] + reasons + [code for code, _ in policy]
            + ([rules.REVIEW_SAMPLE] if sampled else []),
            model_version=version, degraded=sorted(v.degraded),
            latency_ms=float(max(decided_at - v.record.read_ms, 0)),
            strategy_version=compiled.version, shadow=fired.shadow,
            shadow_model_version=shadow.model_version if shadow else "",
            shadow_score=shadow.scores[index] if shadow else None,
            features={name: None if value != value else value  # NaN: a signal it lacked
                      for name, value in zip(self._names, row, strict=True)},
            review_probability=rate,
        )  # fmt: skip

    def _count_series(self, versions: Versions) -> None:
        """Every rule's series from its first version on: an alert on its first error fires."""
        for compiled in versions.all:
            for code in compiled.codes:
                self._metrics.rule_errors.labels(code)
                for state in ("active", "shadow"):
                    self._metrics.rule_fires.labels(code, state)
        self._counted = versions

    def _model_outcome(
        self,
        t: st.Thresholds,
        response: ScoreResponse,
        score: float,
        probability: float,
        amount_usd: float,
        losses: list[float],
    ) -> rules.Outcome:
        """By the model version's own thresholds, or by cost under the alert budget (the
        expected loss joins ``losses``, for the budget once the batch is decided)."""
        if t.mode == "model":
            return rules.model_outcome(score, response.review_threshold,
                                       response.decline_threshold)  # fmt: skip
        losses.append(thresholds.expected_loss(probability, amount_usd, t))
        return thresholds.outcome(probability, amount_usd, self._budget.bar(), t)

    def _features(self, txs: list[Transaction]) -> Looked | None:
        """Features and blocklist flags from Redis, or None while Redis is unavailable (the
        events are then held to be recorded once it answers). A Redis error that is not an
        outage (a wrong type, say) is raised: it belongs to a record, not to the batch."""
        if time.monotonic() < self._redis_retry_at:
            self._hold(txs)
            return None
        started = time.perf_counter()
        try:
            self._record_unrecorded()
            self._lists.refresh()
            looked = self._store.update(txs)
        except Exception as error:
            if not is_transient(error):
                raise
            self._warnings.warning("redis", "Redis unavailable (%s): deciding without history "
                                   "or blocklists, by the failure policy", error)  # fmt: skip
            self._redis_retry_at = time.monotonic() + REDIS_RETRY_S
            self._hold(txs)
            return None
        self._metrics.redis.observe(time.perf_counter() - started)
        return looked

    def _hold(self, txs: list[Transaction]) -> None:
        """Keep events decided without Redis for their cards' histories, up to the limit."""
        room = max(self._options.unrecorded_max - len(self._unrecorded), 0)
        self._unrecorded += txs[:room]
        self._metrics.unrecorded.labels("dropped").inc(len(txs) - min(room, len(txs)))
        self._metrics.unrecorded_held.set(len(self._unrecorded))

    def _record_unrecorded(self) -> None:
        """Record what was decided during an outage, oldest first (idempotent by id: a
        transaction already counted is not counted again). An outage again raises; an event
        that meets an error that would recur is dropped, counted, rather than block the rest.
        A share at a time, before each batch, so no batch waits for a whole backlog."""
        for _ in range(RECORD_PER_BATCH // RECORD_CHUNK):
            if not self._unrecorded:
                return
            chunk = self._unrecorded[:RECORD_CHUNK]
            try:
                self._store.update(chunk)
                recorded = len(chunk)
            except Exception as error:
                if is_transient(error):
                    raise
                recorded = sum(self._record_alone(tx) for tx in chunk)
            del self._unrecorded[:RECORD_CHUNK]
            self._metrics.unrecorded.labels("recorded").inc(recorded)
            self._metrics.unrecorded.labels("dropped").inc(len(chunk) - recorded)
            self._metrics.unrecorded_held.set(len(self._unrecorded))

    def close(self) -> None:
        """What is still held is lost with this worker (it lives in memory only): say so."""
        if self._unrecorded:
            log.warning("%d events decided without Redis were never recorded in their cards' "
                        "histories: this worker stops", len(self._unrecorded))  # fmt: skip
            self._metrics.unrecorded.labels("dropped").inc(len(self._unrecorded))
            self._unrecorded.clear()

    def _record_alone(self, tx: Transaction) -> bool:
        try:
            self._store.update([tx])
        except Exception as error:
            if is_transient(error):
                raise
            self._warnings.warning("unrecorded", "%s not recorded after the outage: %s: %s",
                                   tx.transaction_id, type(error).__name__, error)  # fmt: skip
            return False
        return True

    def _score(self, rows: list[list[float]]) -> ScoreResponse | str:
        """The scores of ``rows``, or why there are none (the decisions' degraded reason)."""
        started = time.perf_counter()
        try:
            response = self._scorer.score(rows)
        except ScoringRejected as error:  # the service is up and refuses: say so, loudly
            self._warnings.warning("scoring_rejected", "scoring rejected a batch of %d rows "
                                   "(an incompatible model?): %s", len(rows), error)  # fmt: skip
            return "scoring_rejected"
        except ScoringUnavailable:
            return "scoring"
        except Exception as error:  # a malformed reply, say: rules only, never a crash
            self._warnings.warning("scoring_failed", "scoring failed (%s: %s)",
                                   type(error).__name__, error)  # fmt: skip
            return "scoring"
        self._metrics.scoring.observe(time.perf_counter() - started)
        problem = _reply_problem(response, len(rows))
        if problem:
            self._warnings.warning("scoring_reply", "scoring reply unusable (%s): by the "
                                   "failure policy", problem)  # fmt: skip
            return "scoring_reply"
        shadow = response.shadow
        if shadow is not None and not _usable_shadow(shadow.scores, len(rows)):
            self._warnings.warning("shadow_reply", "shadow scores unusable: decided without "
                                   "them (the primary's stand)")  # fmt: skip
            return msgspec.structs.replace(response, shadow=None)
        return response

    def _dead_letter(self, record: Record, invalid: InvalidEvent) -> Output:
        """The record's dead letter, keyed by its own key (card numbers masked, as inside)."""
        self._metrics.dlq.labels(invalid.kind, invalid.field).inc()
        source = (self._options.source_topic, record.partition, record.offset)
        letter = dead_letter(invalid, record.value, record.key, source, self._options.raw_limit)
        self._letters.record(letter)
        return Output(key=letter.key, dead_letter=encode(letter))

    def _observe(self, decision: Decision) -> None:
        self._metrics.decisions.labels(decision.decision, decision.model_version).inc()
        for reason in decision.reasons:
            if reason.startswith(st.RULE_PREFIX):
                self._metrics.rule_fires.labels(reason, "active").inc()
            elif reason.startswith("list:"):
                self._metrics.list_hits.labels(reason).inc()
        for reason in decision.shadow:
            self._metrics.rule_fires.labels(reason, "shadow").inc()
        self._metrics.latency.observe(decision.latency_ms / 1000)
        for dependency in decision.degraded:
            self._metrics.degraded.labels(dependency).inc()
        for reason in decision.reasons:
            if reason.startswith(rules.POLICY_PREFIX):
                self._metrics.policy.labels(reason).inc()

    def _count(self, records: Sequence[Record], valid: list[_Valid]) -> None:
        self._metrics.batch_rows.observe(len(records))
        self._metrics.events.labels("valid").inc(len(valid))
        self._metrics.events.labels("invalid").inc(len(records) - len(valid))
        stamps = [r.timestamp_ms for r in records if r.timestamp_ms is not None]
        if stamps:  # a producer-set timestamp from the future never hides a lag
            now = _wall_ms()
            self._metrics.lag_seconds.set(max(0.0, (now - min(max(stamps), now)) / 1000))
        late = 0
        for v in valid:  # the watermark: the partition's latest valid event time, less slack
            latest = self._latest.get(v.record.partition, v.tx.event_time_ms)
            late += v.tx.event_time_ms < latest - self._options.out_of_orderness_ms
            self._latest[v.record.partition] = max(latest, v.tx.event_time_ms)
        self._metrics.late.inc(late)
