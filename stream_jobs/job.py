"""The PyFlink stream job: Kafka ``transactions`` in; decisions, alerts and dead letters out.

The plan, all in Flink SQL but for one vectorised Python function:

    transactions (raw bytes + partition, offset, Kafka timestamp; event-time watermark)
      -> decide(...)  pandas UDF: one call per micro-batch (stream_jobs.decide.Decider)
      -> decisions | alerts | transactions.dlq   one Kafka sink, topic chosen per row

Keyed by card_id through Kafka itself: producers key messages by card_id, so a card's events
share a partition, a source split and (the UDF is chained to the source) one Python worker,
in order, at any parallelism. The job's only Flink state is the source offsets, committed to
the consumer group at each checkpoint; features live in Redis, recorded idempotently. A
restart resumes from the last checkpoint's offsets and decides the replayed events again
(identically, while Redis keeps their rows). With ``job_delivery`` exactly-once (the default)
the sink writes in a Kafka transaction per checkpoint, aborted on a crash: a read_committed
reader (every reader the project ships) sees each decision once, on Apache Kafka. Tansu does
not hide aborted records, so there, and with at-least-once, a replay repeats some decisions
and every reader keeps the first it sees of a transaction id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from services.core.kafka import topic_epochs
from services.core.kafka_config import java_keystore, java_properties, librdkafka
from services.core.settings import Settings, SettingsError, scrub_secrets_from_environment

log = logging.getLogger(__name__)
SOURCE, SINK = "transactions_in", "pipeline_out"
PIPELINE = "fraudstream-decide"  # the Flink job name
PROMETHEUS_REPORTERS = "org.apache.flink.metrics.prometheus"
BATCHES_PER_BUNDLE = 10
MAX_REQUEST_BYTES = 1024 * 1024  # every output fits: a dead letter keeps <= 256 KiB raw
TRANSACTION_TIMEOUT_MS = 10 * 60 * 1000  # longer than any restart; the broker's cap is 15 min


def _literal(text: str) -> str:
    """A Flink SQL string literal: quotes doubled, so no value can end it early."""
    return "'" + text.replace("'", "''") + "'"


def _with(options: dict[str, str]) -> str:
    return ", ".join(f"{_literal(k)} = {_literal(v)}" for k, v in options.items())


def _kafka_options(settings: Settings) -> dict[str, str]:
    """The Kafka client's properties as table options: a client key travels as a file."""
    keystore = java_keystore(settings.kafka, settings.state_dir / "secrets")
    return {f"properties.{k}": v for k, v in java_properties(settings.kafka, keystore).items()}


def source_ddl(settings: Settings, start: dict[str, str] | None = None) -> str:
    """The raw source: bytes, their Kafka coordinates and timestamp, and when the job read
    them; ``start``: where it begins (``start_position``). No watermark: the decider keeps its
    own from validated events only."""
    props = _kafka_options(settings)
    return f"""
    CREATE TEMPORARY TABLE {SOURCE} (
      `key` BYTES,
      `value` BYTES,
      `partition` INT METADATA VIRTUAL,
      `offset` BIGINT METADATA VIRTUAL,
      `ingest` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
      `read_at` AS PROCTIME()
    ) WITH ({
        _with(
            props
            | {
                "connector": "kafka",
                "topic": settings.topic.transactions,
                "properties.group.id": settings.job.group_id,
                "properties.fetch.max.wait.ms": str(settings.kafka.fetch_max_wait_ms),
                "key.format": "raw",
                "key.fields": "key",
                "value.format": "raw",
                "value.fields-include": "EXCEPT_KEY",
            }
            | (start or GROUP_OFFSETS)
        )
    })"""


# The group's committed offsets; one the topic no longer holds (retention ran past it while
# the job was behind) resumes from the oldest retained, never skipping the backlog.
GROUP_OFFSETS = {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"}


def start_position(settings: Settings) -> dict[str, str]:
    """Where the source starts (a job resumed from a checkpoint takes its offsets from it):
    the group's committed offsets; for a group without any (new, or expired while the job was
    stopped) the newest transaction, so a new group never re-decides and re-alerts the whole
    retained topic, or with ``job_from_beginning`` the oldest."""
    if committed_offsets(settings):
        return GROUP_OFFSETS
    mode = "earliest-offset" if settings.job.from_beginning else "latest-offset"
    log.warning(
        "consumer group %r has no committed offsets: starting at the %s transaction",
        settings.job.group_id,
        "oldest" if settings.job.from_beginning else "newest",
    )
    return {"scan.startup.mode": mode}


_COORDINATOR_LOADING = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                        KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT)  # fmt: skip


def committed_offsets(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Whether the job's consumer group has an offset committed on the transactions topic
    (asked again while the group's coordinator is still loading: a broker just started)."""
    consumer = Consumer(librdkafka(settings.kafka) | {"group.id": settings.job.group_id})
    deadline = time.monotonic() + timeout_s
    try:
        topic = settings.topic.transactions
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        while True:
            try:
                found = consumer.committed([TopicPartition(topic, p) for p in partitions],
                                           timeout=10)  # fmt: skip
                return any(tp.offset >= 0 for tp in found)
            except KafkaException as error:
                kafka_error = error.args[0]
                again = kafka_error.retriable() or kafka_error.code() in _COORDINATOR_LOADING
                if not again or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def sink_ddl(settings: Settings) -> str:
    props = _kafka_options(settings)
    topics = ";".join([settings.topic.decisions, settings.topic.alerts, settings.topic.dlq])
    return f"""
    CREATE TEMPORARY TABLE {SINK} (
      `topic` STRING METADATA, `key` BYTES, `value` BYTES
    ) WITH ({
        _with(
            props
            | {
                "connector": "kafka",
                "topic": topics,
                "properties.linger.ms": "1",
                "properties.max.request.size": str(MAX_REQUEST_BYTES),
                "properties.transaction.timeout.ms": str(TRANSACTION_TIMEOUT_MS),
                "sink.delivery-guarantee": settings.job.delivery,
                "sink.transactional-id-prefix": f"{settings.job.group_id}-",
                "key.format": "raw",
                "key.fields": "key",
                "value.format": "raw",
                "value.fields-include": "EXCEPT_KEY",
            }
        )
    })"""


def insert_sql(settings: Settings) -> str:
    """Every output row once: one decide() call per record, its (up to) three messages
    unnested into one stream for the sink, so the whole plan is one chain of operators (three
    branches into the sink would put a network hand-off, and its buffering, before the sink).
    The read time is cast: a Python function cannot take a time attribute, and the cast makes
    the JVM read the clock as each row passes."""
    out = "ROW<topic STRING, k BYTES, v BYTES>"
    messages = ", ".join(
        f"CAST(ROW({_literal(topic)}, d.r.k, d.r.{column}) AS {out})"
        for topic, column in ((settings.topic.decisions, "d"), (settings.topic.alerts, "a"),
                              (settings.topic.dlq, "q"))
    )  # fmt: skip
    return f"""INSERT INTO {SINK}
    SELECT m.topic, m.k, m.v FROM (
      SELECT decide(`key`, `value`, `partition`, `offset`, CAST(`read_at` AS TIMESTAMP_LTZ(3)),
                    `ingest`) AS r
      FROM {SOURCE}
    ) AS d
    CROSS JOIN UNNEST(ARRAY[{messages}]) AS m(topic, k, v)
    WHERE m.v IS NOT NULL"""


def _python_environment() -> dict[str, str]:
    """The Python workers run this interpreter, with this project importable."""
    root = str(Path(__file__).resolve().parent.parent)
    return {"python.executable": sys.executable, "python.client.executable": sys.executable,
            "python.pythonpath": root}  # fmt: skip


def _recovery(settings: Settings) -> dict[str, str]:
    """Local mode: checkpoints kept in the state directory, and a job started again resumes
    from the latest completed one (source offsets and open Kafka transactions, so exactly-once
    holds across a crash of the whole process; a cluster's own configuration does this
    there). Older checkpoints are removed. Kept per incarnation of the transactions topic (its
    topic id): offsets of a topic since re-created (a restarted in-memory broker) never apply."""
    topic = settings.topic.transactions
    epoch = topic_epochs(settings, [topic])[topic]  # base64: it may hold "/" and "+"
    name = hashlib.sha256(epoch.encode()).hexdigest()[:16]
    root = settings.state_dir / "checkpoints" / settings.job.group_id / name
    options = {
        "execution.checkpointing.dir": root.resolve().as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
    }
    latest = latest_checkpoint(root)
    if latest is not None:
        options["execution.state-recovery.path"] = latest.resolve().as_uri()
        # A plan changed by an upgrade cannot map all of it: start without what it cannot map
        # (the source then starts at the group's committed offsets) rather than not at all.
        options["execution.state-recovery.ignore-unclaimed-state"] = "true"
        for job in root.iterdir():  # the jobs before the one resumed from
            if job.is_dir() and job != latest.parent:
                shutil.rmtree(job, ignore_errors=True)
    return options


def latest_checkpoint(root: Path) -> Path | None:
    """The newest completed checkpoint under ``root`` (one with its ``_metadata``), if any."""
    done = [m.parent for m in root.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: p.stat().st_mtime, default=None)


def _restart_strategy(settings: Settings) -> dict[str, str]:
    job, prefix = settings.job, "restart-strategy.failure-rate"
    return {
        "restart-strategy.type": "failure-rate",
        f"{prefix}.max-failures-per-interval": str(job.restart_attempts),
        f"{prefix}.failure-rate-interval": f"{job.restart_interval_s} s",
        f"{prefix}.delay": f"{job.restart_delay_s} s",
    }


def _flink_metrics(settings: Settings) -> dict[str, str]:
    """Flink's own metrics pushed to a Pushgateway (the local stack's), if one is set: Flink's
    Prometheus reporter would bind every interface, the pushing one binds none."""
    url = settings.job.flink_metrics_push_url
    if url is None:
        return {}
    import pyflink

    plugin = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus"
    reporter = "metrics.reporter.pushgateway"
    return {
        # Local mode loads no plugins: the reporter's jar goes on the job's class path instead.
        "pipeline.classpaths": ";".join(jar.as_uri() for jar in plugin.glob("*.jar")),
        f"{reporter}.factory.class": f"{PROMETHEUS_REPORTERS}.PrometheusPushGatewayReporterFactory",
        f"{reporter}.hostUrl": url,
        f"{reporter}.jobName": PIPELINE,
        f"{reporter}.randomJobNameSuffix": "false",  # a restarted job replaces its metrics
        f"{reporter}.deleteOnShutdown": "true",
        f"{reporter}.interval": "5 s",
    }


def table_environment(
    settings: Settings, remote: tuple[str, int] | None = None, local: bool = True
) -> Any:
    """``remote``: a cluster to submit to; ``local``: this process runs the job (its own
    checkpoints and metrics pushing); neither: inside a cluster, whose configuration rules."""
    # The settings travel inside the function; the JVM and its Python workers inherit this
    # process's environment, which Beam writes whole to PyFlink's log: no secret may be there.
    scrub_secrets_from_environment()
    # Locally PyFlink would run every subtask's Python in this client process, under one GIL
    # ("loopback" mode); a worker process per subtask lets parallelism use more than one core.
    os.environ["_python_worker_execution_mode"] = "process"  # noqa: SIM112 (PyFlink's name)
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    options = {
        "parallelism.default": str(settings.job.parallelism),
        "table.local-time-zone": "UTC",
        "execution.checkpointing.interval": f"{settings.job.checkpoint_interval_ms} ms",
        "python.fn-execution.bundle.time": str(settings.job.bundle_ms),
        # A bundle of several batches: the JVM streams the next batch to Python while decide()
        # works on the current one, instead of waiting for each (measured: +35 % events/s).
        "python.fn-execution.bundle.size": str(settings.job.bundle_rows * BATCHES_PER_BUNDLE),
        "python.fn-execution.arrow.batch.size": str(settings.job.bundle_rows),
        "pipeline.name": PIPELINE,
        # Bounded restarts: a failing job restarts a few times, then fails for all to see
        # (no record can fail it: decide() turns any per-record failure into a dead letter).
        **_restart_strategy(settings),
        # Records handed along the chain as they are, not copied at each operator: safe while
        # every operator of the plan is done with a record before it takes the next (the
        # Kafka sink serialises as it writes); one that keeps records would need copies.
        "pipeline.object-reuse": "true",
    } | _python_environment()
    if remote is not None:
        options |= {"execution.target": "remote", "rest.address": remote[0],
                    "rest.port": str(remote[1])}  # fmt: skip
    elif local:
        options |= _flink_metrics(settings) | _recovery(settings)
        if settings.job.rest_port:  # the local cluster's REST API: state, restarts, exceptions
            options |= {"rest.address": "127.0.0.1", "rest.bind-address": "127.0.0.1",
                        "rest.bind-port": str(settings.job.rest_port)}  # fmt: skip
    for key, value in options.items():
        config.set(key, value)
    return env


def build(settings: Settings, remote: tuple[str, int] | None = None, local: bool = True) -> Any:
    """The table environment with source, sink and UDF registered, ready to execute."""
    from stream_jobs.udf import decide_udf

    kafka = settings.kafka
    certificate = kafka.ssl_certificate_location or kafka.ssl_key_location
    if (remote or not local) and certificate and kafka.ssl_keystore_location is None:
        raise SettingsError(  # the key store the job would write here is not on the cluster
            "a job run by a Flink cluster with a Kafka client certificate needs "
            "FRAUDSTREAM_KAFKA_SSL_KEYSTORE_LOCATION: one PEM file with the key and its "
            "chain, present on every Flink node (a mounted Secret)"
        )
    env = table_environment(settings, remote, local)
    env.execute_sql(source_ddl(settings, start_position(settings)))
    env.execute_sql(sink_ddl(settings))
    env.create_temporary_function("decide", decide_udf(settings))
    return env


def run(settings: Settings) -> None:
    """Run the job in this process (PyFlink local mode) until it is stopped."""
    build(settings).execute_sql(insert_sql(settings)).wait()


def submit(settings: Settings, host: str, port: int) -> str:
    """Submit the same job to a Flink cluster's REST endpoint; return the job id."""
    result = build(settings, (host, port)).execute_sql(insert_sql(settings))
    client = result.get_job_client()
    return str(client.get_job_id()) if client is not None else ""
