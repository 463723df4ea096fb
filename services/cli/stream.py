"""CLI commands of the stream job: run and submit it, verify its output, follow alerts, demo."""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Annotated, Any

import typer

from services.cli.options import kafka_settings
from services.cli.options import setting_option as _opt
from services.core.errors import MissingExtra, UserError
from services.core.redis_check import check_redis
from services.core.settings import Settings, load_settings
from services.devstack.java import find_java_home

job_app = typer.Typer(help="The PyFlink stream job.")
cluster_app = typer.Typer(help="A standalone Flink cluster on loopback (apache-flink wheel).")
job_app.add_typer(cluster_app, name="cluster")


ParallelismOpt = Annotated[int | None, _opt("job_parallelism", "Job parallelism", "parallelism")]
GroupOpt = Annotated[str | None, _opt("job_group_id", "Kafka consumer group", "group-id")]
MetricsPortOpt = Annotated[
    int | None, _opt("job_metrics_port", "First Prometheus port (0: none)", "metrics-port")
]
FromBeginningOpt = Annotated[
    bool | None,
    typer.Option(
        "--from-beginning/--from-end",
        help="Where a consumer group without committed offsets starts: the oldest retained "
        "transaction, or (default) the newest (FRAUDSTREAM_JOB_FROM_BEGINNING).",
        show_default=False,
    ),
]


def _job_settings(**overrides: Any) -> Settings:
    settings = kafka_settings(**overrides)
    check_redis(settings.redis, outage_ok=True)  # decided by the failure policy meanwhile
    settings.scoring.require_url()
    settings.token.tokenizer()  # the job tokenizes raw card numbers: fail now, not per worker
    return settings


def _job_module() -> Any:
    """The job module, with a Java runtime PyFlink can use in JAVA_HOME."""
    try:
        from stream_jobs import job
    except ImportError as error:
        raise MissingExtra("job", error.name) from None
    os.environ["JAVA_HOME"] = str(find_java_home())
    return job


@job_app.command("run")
def job_run(
    parallelism: ParallelismOpt = None,
    group_id: GroupOpt = None,
    metrics_port: MetricsPortOpt = None,
    from_beginning: FromBeginningOpt = None,
) -> None:
    """Run the stream job here (PyFlink local mode) until interrupted or SIGTERM."""
    settings = _job_settings(
        job_parallelism=parallelism, job_group_id=group_id, job_metrics_port=metrics_port,
        job_from_beginning=from_beginning,
    )  # fmt: skip
    _job_module().run(settings)


@job_app.command("submit")
def job_submit(
    jobmanager: Annotated[str, typer.Option(help="The Flink cluster's REST endpoint, HOST:PORT.")],
    parallelism: ParallelismOpt = None,
    group_id: GroupOpt = None,
    metrics_port: MetricsPortOpt = None,
    from_beginning: FromBeginningOpt = None,
) -> None:
    """Submit the same job to a Flink cluster (standalone or Kubernetes session); print its id."""
    host, _, port = jobmanager.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--jobmanager: expected HOST:PORT, got {jobmanager!r}")
    settings = _job_settings(
        job_parallelism=parallelism, job_group_id=group_id, job_metrics_port=metrics_port,
        job_from_beginning=from_beginning,
    )  # fmt: skip
    typer.echo(_job_module().submit(settings, host, int(port)))


@cluster_app.command("up")
def cluster_up(
    taskmanagers: Annotated[int, typer.Option(min=1, max=16, help="TaskManagers.")] = 2,
    slots: Annotated[int, typer.Option(min=1, max=16, help="Task slots each.")] = 1,
) -> None:
    """Start one JobManager and the TaskManagers; print the address `job submit` takes."""
    _job_module()  # the cluster's scripts and jars come with the job extra
    from services.devstack import flink_cluster

    cluster = flink_cluster.up(load_settings().state_dir, taskmanagers, slots)
    typer.echo(cluster.jobmanager)


@cluster_app.command("down")
def cluster_down() -> None:
    """Cancel the cluster's jobs and stop its processes; safe to repeat."""
    from services.devstack import flink_cluster

    stopped = flink_cluster.down(load_settings().state_dir)
    typer.echo("cluster stopped" if stopped else "no cluster was running")


def verify_cmd(
    idle: Annotated[
        float, typer.Option(min=0.1, help="A topic is read until idle this long.")
    ] = 3.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare input ids with decision ids: missing, duplicate and unexpected decisions, and
    invalid inputs without a dead letter. Exit 1 when anything is missing."""
    from services.clients.verify import verify

    result = verify(kafka_settings(), idle_s=idle)
    payload = dataclasses.asdict(result) | {"complete": result.complete}
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        for name, value in payload.items():
            typer.echo(f"{name:>26}  {value}")
    if not result.complete:
        raise typer.Exit(1)


def demo_cmd(
    rate: Annotated[int, typer.Option(min=1, max=100_000, help="Events per second.")] = 2_000,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of streaming.")] = 30.0,
    seed: Annotated[int | None, typer.Option(help="Generator seed (default: random).")] = None,
    fraud_rate: Annotated[float, typer.Option(min=0, max=0.5, help="Share of fraud.")] = 0.01,
    monitoring: Annotated[
        bool | None,
        typer.Option(
            "--monitoring/--no-monitoring",
            show_default=False,
            help="The stack with its Prometheus (stack up --monitoring).",
        ),
    ] = None,
    analyst: Annotated[
        bool,
        typer.Option(
            "--analyst/--no-analyst",
            help="Label every alert with the generator's truth, as an analyst team would; "
            "--no-analyst leaves them open in the workbench for you.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="No live view; one JSON object.")] = False,
) -> None:
    """Start the embedded stack and the stream job, stream the generator at --rate for
    --duration seconds with a live view, then summarise (latency, precision and recall)."""
    from rich.console import Console
    from rich.live import Live

    from services.devstack import demo

    config = demo.DemoConfig(rate, duration, seed or random.randrange(2**31), fraud_rate,
                             analyst=analyst)  # fmt: skip
    settings = load_settings(stack_monitoring=monitoring)
    if as_json:
        summary = demo.run(settings, config, lambda _p: None)
        typer.echo(json.dumps(summary))
        return
    console = Console(stderr=True)
    console.print("starting the stack and the stream job (PyFlink takes ~15 s)…")
    with Live(console=console, refresh_per_second=4) as live:
        summary = demo.run(settings, config, lambda p: live.update(_live_view(p, config)))
    console.print(_summary_table(summary))


def _live_view(progress: Any, config: Any) -> Any:
    from rich.console import Group
    from rich.table import Table

    stats = Table.grid(padding=(0, 3))
    stats.add_row(
        f"produced {progress.produced:,}/{int(config.rate * config.duration_s):,}",
        f"decided {progress.decisions:,}",
        f"{progress.events_per_s():,.0f} decisions/s",
        f"p50 {progress.percentile_ms(50, 5.0):.1f} ms",
        f"p99 {progress.percentile_ms(99, 5.0):.1f} ms",
    )
    stats.add_row(
        *(f"{k} {progress.outcomes[k]:,}" for k in ("approve", "review", "decline")),
        f"alerts {progress.alerts:,}  dlq {progress.dlq}  degraded {progress.degraded}",
        f"labelled {progress.dispositions:,}  blocklisted {progress.blocklisted:,}",
    )
    alerts = Table("card", "amount", "decision", "score", "reasons", title="latest alerts")
    for a in reversed(progress.latest_alerts):
        tx = a.transaction
        alerts.add_row(tx.card_id, f"{tx.amount:,.2f} {tx.currency}", a.decision,
                       f"{a.score:.3f}", ", ".join(a.reasons[:3]))  # fmt: skip
    return Group(stats, alerts)


def _summary_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table("summary", "value", title="demo")
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return table


def alerts_cmd(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new ones.")
    ] = False,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest alert.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON alert per line.")] = False,
) -> None:
    """Print alerts (review and decline decisions with their reasons) as they arrive; repeats
    after a job restart are dropped. Without --follow, stop when none arrived for 3 s."""
    from services.clients.alerts import follow_alerts

    for alert, raw in follow_alerts(kafka_settings(), follow, from_beginning):
        if as_json:
            typer.echo(raw)
        else:
            tx = alert.transaction
            typer.echo(
                f"{alert.decision:<8} {alert.score:.3f} {tx.card_id} {tx.amount:,.2f} "
                f"{tx.currency} {tx.merchant_id} {alert.transaction_id}  {', '.join(alert.reasons)}"
            )
