"""``fraudstream retrain``: train on the lake, evaluate, shadow, judge on outcomes, promote;
resumable step by step (``stream_jobs.retrain``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from services.cli.backtest import MaturityOpt, StrategyRef, matured
from services.cli.models import JsonOpt, RegistryOpt, _registry
from services.cli.strategy import named_strategy
from services.core.errors import MissingExtra, UserError
from services.core.settings import load_settings

out = Console(stderr=True)
STEPS = ("train", "evaluate", "shadow")


def retrain_cmd(
    lake: Annotated[
        Path | None, typer.Option(help="The lake. Default: the configured one.")
    ] = None,
    strategy: StrategyRef = None,
    maturity_days: MaturityOpt = None,
    stop_after: Annotated[
        str | None,
        typer.Option(help=f"Stop once this step is done ({', '.join(STEPS)}): to look first."),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show the run in flight and the finished ones.")
    ] = False,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a retraining run, or take the unfinished one as far as it can go now: train on
    the lake's matured labels, evaluate against the current model, score it as the shadow,
    and after the shadow period promote it if it is no worse on the decisions' outcomes.
    Run it again (a CronJob does) to move a run on; a killed run resumes where it stopped."""
    try:
        from stream_jobs import retrain
    except ImportError as error:
        raise MissingExtra("train", error.name) from None
    if stop_after is not None and stop_after not in STEPS:
        raise UserError(f"--stop-after: one of {', '.join(STEPS)}")
    reg = _registry(registry)
    if status:
        _show(retrain.status(reg), as_json)
        return
    settings = load_settings()
    _, chosen = named_strategy(strategy)
    pipeline = retrain.Pipeline(reg, lake or settings.lake_path, settings.retrain,
                                matured(maturity_days), chosen.thresholds,
                                say=lambda line: out.print(line, markup=False))  # fmt: skip
    try:
        run = pipeline.run(stop_after)  # type: ignore[arg-type]
    except retrain.RetrainError as error:
        raise UserError(str(error)) from None
    if run is None:  # rested: the last run was too recent
        if as_json:
            typer.echo("null")
        return
    if as_json:
        typer.echo(retrain.as_json(run))
    else:
        out.print(f"run {run.id}: {run.step} (candidate {run.candidate or '-'}, champion "
                  f"{run.champion or '-'})")  # fmt: skip


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(state))
        return
    for run in [*state["finished"], *([state["run"]] if state["run"] else [])]:
        out.print(f"[bold]run {run['id']}[/]: {run['step']} (candidate {run['candidate']}, "
                  f"champion {run['champion']})")  # fmt: skip
        for entry in run["log"]:
            out.print(f"  {entry['step']}: {entry['message']}")
