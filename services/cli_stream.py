"""CLI commands of the stream job: run and submit it, verify its output, follow alerts, demo."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer

from services.errors import MissingExtra, UserError
from services.settings import ENV_PREFIX, Settings, load_settings

job_app = typer.Typer(help="The PyFlink stream job.")


def _opt(setting: str, help_text: str, flag: str | None = None) -> Any:
    return typer.Option(
        f"--{flag or setting.replace('_', '-')}",
        envvar=f"{ENV_PREFIX}{setting.upper()}",
        show_envvar=True,
        help=help_text,
    )


ParallelismOpt = Annotated[int | None, _opt("job_parallelism", "Job parallelism", "parallelism")]
GroupOpt = Annotated[str | None, _opt("job_group_id", "Kafka consumer group", "group-id")]
MetricsPortOpt = Annotated[
    int | None, _opt("job_metrics_port", "First Prometheus port (0: none)", "metrics-port")
]


def _job_settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    settings.require_kafka()
    settings.require_redis()
    if settings.scoring_url is None:
        raise UserError(
            "no scoring service: run `fraudstream stack up` or set FRAUDSTREAM_SCORING_URL"
        )
    return settings


def _job_module() -> Any:
    try:
        from stream_jobs import job
    except ImportError as error:
        raise MissingExtra("job", error.name) from None
    return job


@job_app.command("run")
def job_run(
    parallelism: ParallelismOpt = None,
    group_id: GroupOpt = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Run the stream job here (PyFlink local mode) until interrupted or SIGTERM."""
    settings = _job_settings(
        job_parallelism=parallelism, job_group_id=group_id, job_metrics_port=metrics_port
    )
    _job_module().run(settings)


@job_app.command("submit")
def job_submit(
    jobmanager: Annotated[str, typer.Option(help="The Flink cluster's REST endpoint, HOST:PORT.")],
    parallelism: ParallelismOpt = None,
    group_id: GroupOpt = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Submit the same job to a Flink cluster (standalone or Kubernetes session); print its id."""
    host, _, port = jobmanager.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--jobmanager: expected HOST:PORT, got {jobmanager!r}")
    settings = _job_settings(
        job_parallelism=parallelism, job_group_id=group_id, job_metrics_port=metrics_port
    )
    typer.echo(_job_module().submit(settings, host, int(port)))


def verify_cmd(
    idle: Annotated[
        float, typer.Option(min=0.1, help="A topic is read until idle this long.")
    ] = 3.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare input ids with decision ids: missing, duplicate and unexpected decisions, and
    invalid inputs without a dead letter. Exit 1 when anything is missing."""
    from services.verify import verify

    result = verify(load_settings(), idle_s=idle)
    payload = dataclasses.asdict(result) | {"complete": result.complete}
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        for name, value in payload.items():
            typer.echo(f"{name:>26}  {value}")
    if not result.complete:
        raise typer.Exit(1)
