"""The Grafana dashboards, built from one table of panels: each query is written once here.

``python -m services.devstack.dashboards`` writes them as JSON into
``helm/fraudstream/monitoring/dashboards/`` (the chart ships them as ConfigMaps labelled
``grafana_dashboard: "1"``); a test proves the files are what this module builds, and runs
every query against a real Prometheus scraping the embedded stack.

Every dashboard has the variables ``datasource``, ``namespace``, ``job`` (the scrape job:
fraudstream-job, -scoring, -feedback) and ``instance``; every query filters on ``namespace``
(a recording rule keeps only that label), the others on ``job`` and ``instance`` too, except
Flink's own metrics (a Flink scrape job, or locally the pushed job name): on ``namespace`` and
``instance``. Every panel has a title, a unit and a description.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "helm" / "fraudstream" / "monitoring" / "dashboards"
SEL = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'  # the project's metrics
FLINK = 'namespace=~"$namespace", instance=~"$instance"'  # Flink's own: its job label is Flink's
NS = '{namespace=~"$namespace"}'  # the recording rules' series: aggregated by namespace
DRIFT = '{namespace=~"$namespace"'  # the same, left open for a feature matcher
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    query: str
    unit: str
    description: str
    legend: str = ""


def _rate(metric: str, by: str = "", match: str = "") -> str:
    group = f" by ({by})" if by else ""
    scope = f"{match}, {SEL}" if match else SEL
    return f"sum{group} (rate({metric}{{{scope}}}[{RATE}]))"


def _quantile(q: float, metric: str, by: str = "") -> str:
    extra = f", {by}" if by else ""
    return f"histogram_quantile({q}, sum by (le{extra}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))"


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "fraudstream-overview": ("fraudstream: decision flow", [
        Panel("Transactions consumed", _rate("fraudstream_job_events_total", "result"), "ops",
              "Records the stream job read per second, valid or not.", "{{result}}"),
        Panel("Decisions", _rate("fraudstream_job_decisions_total", "decision"), "ops",
              "Decisions published per second, by outcome.", "{{decision}}"),
        Panel("Decision latency p99", _quantile(0.99, "fraudstream_job_latency_seconds"), "s",
              "Kafka ingest to decision, 99th percentile; the objective is 250 ms.", "p99"),
        Panel("Dead letters", _rate("fraudstream_job_dlq_total", "kind"), "ops",
              "Records sent to the dead-letter topic per second, by kind.", "{{kind}}"),
        Panel("Consumer lag", f"sum(fraudstream_job_consumer_lag{{{SEL}}})", "short",
              "Messages between the job and the end of its partitions.", "lag"),
        Panel("Consumer lag in time", f"max(fraudstream_job_consumer_lag_seconds{{{SEL}}})", "s",
              "Age of the newest record decided, by its Kafka timestamp.", "age"),
    ]),
    "fraudstream-job": ("fraudstream: stream job", [
        Panel("Decision latency p50", _quantile(0.5, "fraudstream_job_latency_seconds"), "s",
              "Median decision latency (the job's read of a record to its decision).", "p50"),
        Panel("Scoring call p99", _quantile(0.99, "fraudstream_job_scoring_call_seconds"), "s",
              "The job's scoring-service call, 99th percentile.", "p99"),
        Panel("Redis time p99", _quantile(0.99, "fraudstream_job_redis_call_seconds"), "s",
              "Redis round trips of one batch's features, 99th percentile.", "p99"),
        Panel("Scoring breaker", f"max(fraudstream_job_scoring_breaker_state{{{SEL}}})",
              "short", "The job's scoring circuit breaker: 0 closed, 1 half-open, 2 open.",
              "state"),
        Panel("Degraded decisions", _rate("fraudstream_job_degraded_decisions_total",
                                          "dependency"), "ops",
              "Decisions made without a dependency, per second.", "{{dependency}}"),
        Panel("Failure policy", _rate("fraudstream_job_policy_decisions_total", "policy"), "ops",
              "Decisions the failure policy raised to review (a dependency missing), per "
              "second.", "{{policy}}"),
        Panel("Held without Redis", f"sum(fraudstream_job_unrecorded_held{{{SEL}}})", "short",
              "Events decided without Redis, waiting to join their cards' histories once it "
              "is back.", "held"),
        Panel("Late events", _rate("fraudstream_job_late_events_total"), "ops",
              "Valid events behind their partition's watermark per second (decided all the "
              "same).", "late"),
        Panel("Batch size p50", _quantile(0.5, "fraudstream_job_batch_rows"), "short",
              "Rows per micro-batch the decider received.", "p50"),
        Panel("Slow decisions", f"fraudstream:decision_latency_slow:ratio_rate5m{NS}",
              "percentunit",
              "Share of decisions over 250 ms (the SLO's error rate), 5 minutes.", "slow"),
        Panel("Flink restarts", f"max by (job_name) (flink_jobmanager_job_numRestarts{{{FLINK}}})",
              "short", "Restarts of the Flink job since it started (Flink's own count); each "
              "replays from the last checkpoint.", "{{job_name}}"),
        Panel("Checkpoint duration",
              f"max by (job_name) (flink_jobmanager_job_lastCheckpointDuration{{{FLINK}}})", "ms",
              "How long the latest checkpoint took; checkpoints commit the source offsets.",
              "{{job_name}}"),
        Panel("Failed checkpoints",
              f"max by (job_name) (flink_jobmanager_job_numberOfFailedCheckpoints{{{FLINK}}})",
              "short", "Checkpoints that failed since the job started.", "{{job_name}}"),
        Panel("Backpressure", "max by (task_name) (flink_taskmanager_job_task_"
              f"backPressuredTimeMsPerSecond{{{FLINK}}}) / 1000", "percentunit",
              "Share of time each task waits for the one after it (the Python decider, the "
              "sinks).", "{{task_name}}"),
        Panel("Rule fires", _rate("fraudstream_job_rule_fires_total", "rule, state"), "ops",
              "Strategy rules firing per second, by rule and state (active: acted on; shadow: "
              "recorded only).", "{{rule}} {{state}}"),
        Panel("Rule errors", _rate("fraudstream_job_rule_errors_total", "rule"), "ops",
              "Strategy rules failing on an event per second (they did not fire).", "{{rule}}"),
        Panel("List hits", _rate("fraudstream_job_list_hits_total", "entry"), "ops",
              "Transactions meeting an analysts' allow- or block-list entry, per second.",
              "{{entry}}"),
        Panel("Strategy version", f"min(fraudstream_job_strategy_version{{{SEL}}})", "short",
              "The newest strategy version every worker holds.", "version"),
        Panel("Strategy feed age", f"time() - min(fraudstream_job_strategy_polled_timestamp_"
              f"seconds{{{SEL}}})", "s", "Since the slowest worker last read the strategy "
              "topic (a few seconds when all is well).", "age"),
        Panel("Strategy refused", _rate("fraudstream_job_strategy_refused_total"), "ops",
              "Strategy messages a worker refused (see its log).", "refused"),
        Panel("Review bar", f"max(fraudstream_job_review_bar_usd{{{SEL}}})", "currencyUSD",
              "Expected fraud loss from which the model's score is reviewed (thresholds by "
              "cost): the review cost, raised to hold the daily alert budget.", "bar"),
    ]),
    "fraudstream-scoring": ("fraudstream: scoring service", [
        Panel("Requests", _rate("fraudstream_scoring_request_seconds_count", "code",
                                'endpoint="score"'), "reqps",
              "Scoring requests per second by status code, failures included.", "{{code}}"),
        Panel("Errors", _rate("fraudstream_scoring_errors_total", "type"), "reqps",
              "Failed requests per second, by type.", "{{type}}"),
        Panel("Request latency p99", _quantile(0.99, "fraudstream_scoring_request_seconds",
                                               "endpoint"), "s",
              "Time in the service per request, every request, 99th percentile.", "{{endpoint}}"),
        Panel("In flight", f"sum(fraudstream_scoring_in_flight{{{SEL}}})", "short",
              "Requests being served now.", "in flight"),
        Panel("Rows per request p50", _quantile(0.5, "fraudstream_scoring_batch_rows"), "short",
              "Rows per scoring request.", "p50"),
    ]),
    "fraudstream-feedback": ("fraudstream: feedback app and lake", [
        Panel("Dispositions applied", _rate("fraudstream_feedback_processed_total", "label"),
              "ops", "Analysts' dispositions applied per second, by label.", "{{label}}"),
        Panel("Ready", f"min(fraudstream_feedback_ready{{{SEL}}})", "short",
              "1 when ready: partitions assigned, no agent stuck on one message past "
              "FRAUDSTREAM_FEEDBACK_STUCK_S, the event loop answering (/readyz says why not).",
              "ready"),
        Panel("Stuck on one message", f"max by (agent) (fraudstream_feedback_stuck_seconds"
              f"{{{SEL}}})", "s", "How long each agent has been retrying its current message "
              "through an outage (Redis down).", "{{agent}}"),
        Panel("Parked dispositions", f"max(fraudstream_feedback_parked_transactions{{{SEL}}})",
              "short", "Transactions whose dispositions wait for them to be known (their alert, "
              "or the lake's archive).", "parked"),
        Panel("Dispositions dead-lettered", _rate("fraudstream_feedback_dlq_total", "field"),
              "ops", "Dispositions sent to alert-feedback.dlq per second, by failing field "
              "($: an error that would recur); `fraudstream feedback redrive` re-sends them.",
              "{{field}}"),
        Panel("Consumer lag", f"sum by (topic) (fraudstream_feedback_consumer_lag{{{SEL}}})",
              "short", "Messages between the app and the end of its partitions, by topic.",
              "{{topic}}"),
        Panel("Consumer lag in time",
              f"max by (topic) (fraudstream_feedback_consumer_lag_seconds{{{SEL}}})", "s",
              "Age of the newest alert and disposition processed, by their Kafka timestamps.",
              "{{topic}}"),
        Panel("Processing p99", _quantile(0.99, "fraudstream_feedback_processing_seconds",
                                          "agent"), "s",
              "Time to process a message or a lake batch, 99th percentile, by agent.",
              "{{agent}}"),
        Panel("Lake rows written", _rate("fraudstream_feedback_lake_rows_total", "table"), "ops",
              "Rows appended to the lake per second, by table.", "{{table}}"),
        Panel("Lake write errors", _rate("fraudstream_feedback_lake_errors_total", "table"),
              "ops", "Failed lake writes per second (retried), by table.", "{{table}}"),
    ]),
    "fraudstream-model": ("fraudstream: model health", [
        Panel("Median score", _quantile(0.5, "fraudstream_scoring_score", "model_version, role"),
              "percentunit", "Median returned score by model version and role (primary or "
              "shadow).", "{{model_version}} {{role}}"),
        Panel("Score p99", _quantile(0.99, "fraudstream_scoring_score", "model_version, role"),
              "percentunit", "99th percentile of scores: where review and decline begin.",
              "{{model_version}} {{role}}"),
        Panel("Loaded models", f"max by (model_version, role) "
              f"(fraudstream_scoring_model_info{{{SEL}}})", "short",
              "1 per model version loaded, by role.", "{{model_version}} {{role}}"),
        Panel("Decisions by model", _rate("fraudstream_job_decisions_total", "model_version"),
              "ops", "Decisions per second by the model version that scored them (none: "
              "rules only).", "{{model_version}}"),
        Panel("Degraded share", f"fraudstream:decisions_degraded:ratio_rate10m{NS}", "percentunit",
              "Share of decisions made without Redis or scoring, 10 minutes.", "degraded"),
        Panel("Rules-only share",
              _rate("fraudstream_job_degraded_decisions_total", match='dependency=~"scoring.*"')
              + " / " + _rate("fraudstream_job_decisions_total"), "percentunit",
              "Share of decisions the model had no part in (scoring unavailable or refusing).",
              "rules only"),
        Panel("Score drift (PSI)", f"max by (model_version) (fraudstream:drift_psi:1h{DRIFT}, "
              'feature="score"})', "short", "Population stability index of the score over the "
              "last hour against the version's training data: 0.1 warns (FraudstreamModelDrift, "
              "over 24 h), 0.25 pages (FraudstreamModelDriftSevere). No value: fewer than "
              "1,000 rows in the hour.",
              "{{model_version}}"),
        Panel("Most drifted features (PSI, 24 h)", "topk(5, max by (model_version, feature) "
              f'(fraudstream:drift_psi:24h{DRIFT}, feature!="score"}}))', "short",
              "The five features whose last 24 hours moved furthest from the training data; "
              "`fraudstream models drift V --from DAY --to DAY --html` draws their histograms.",
              "{{model_version}} {{feature}}"),
        Panel("Rows counted for drift", _rate("fraudstream_scoring_drift_rows_total",
                                              "model_version", 'feature="score"'), "ops",
              "Rows per second the scoring service counts into the version's reference bins.",
              "{{model_version}}"),
    ]),
}  # fmt: skip


def _panel(panel: Panel, number: int) -> dict[str, Any]:
    return {
        "id": number, "type": "timeseries", "title": panel.title, "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((number - 1) % 2), "y": 8 * ((number - 1) // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": panel.query, "legendFormat": panel.legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}],
    }  # fmt: skip


def _variable(name: str, label: str, scope: str = "") -> dict[str, Any]:
    """A multi-value variable of the label ``name`` of the build info, within ``scope``."""
    return {
        "name": name, "label": label, "type": "query", "includeAll": True, "multi": True,
        "allValue": ".*", "refresh": 2,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": f"label_values(fraudstream_build_info{scope}, {name})",
                  "refId": name},
        "current": {"text": "All", "value": "$__all"},
    }  # fmt: skip


def build(uid: str) -> dict[str, Any]:
    title, panels = DASHBOARDS[uid]
    return {
        "uid": uid, "title": title, "tags": ["fraudstream"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus"},
            _variable("namespace", "Namespace"),
            _variable("job", "Component", NS),
            _variable("instance", "Instance", '{namespace=~"$namespace", job=~"$job"}'),
        ]},
        "panels": [_panel(p, i) for i, p in enumerate(panels, start=1)],
    }  # fmt: skip


def rendered(uid: str) -> str:
    return json.dumps(build(uid), indent=2) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for uid in DASHBOARDS:
        (OUT / f"{uid}.json").write_text(rendered(uid))
    sys.stdout.write(f"{len(DASHBOARDS)} dashboards written to {OUT.name}/\n")


if __name__ == "__main__":
    main()
