"""``fraudstream train`` and ``fraudstream models ...``: adapters over ``models.training.workflow``.

The models package needs the ``train`` extra; without it these commands say so in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from services.core.errors import MissingExtra, UserError
from services.core.settings import ENV_PREFIX, load_settings

models_app = typer.Typer(help="The model registry: list, show, promote, roll back, evaluate.")
out = Console()
err = Console(stderr=True)

RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        envvar=f"{ENV_PREFIX}MODEL_REGISTRY",
        show_envvar=True,
        help="Registry directory (default: registry/ in the state directory, seeded with the"
        " shipped model).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DataOpt = Annotated[
    Path,
    typer.Option("--data", help="Labelled data: .jsonl (generator), .csv or .csv.gz, or a lake."),
]
MappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        help="How the file's columns map to transactions and attributes (a mapping file, which"
        " names its signals file): any CSV or JSON-lines layout.",
    ),
]
ToleranceOpt = Annotated[
    float, typer.Option(min=0, help="PR-AUC the candidate may lose against the current.")
]


def _workflow() -> ModuleType:
    try:
        from models.training import workflow
    except ImportError as error:
        raise MissingExtra("train", error.name) from None
    return workflow


def _registry(path: Path | None) -> Any:
    """The registry, checking promotions against the features the job computes with the
    ``FRAUDSTREAM_MODEL_SIGNALS`` file."""
    from models.features.entities import serving_names
    from models.training.registry import Registry, working_registry
    from services.core.signals import load_signals

    settings = load_settings()
    root = working_registry(path or settings.model.registry, settings.state_dir)
    return Registry(root, serving_names(load_signals(settings.model.signals)))


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, default=str))


def _metrics_table(metrics: dict[str, Any], title: str) -> Table:
    table = Table("metric", "value", title=title)
    for key in ("rows", "positives", "pr_auc", "roc_auc", "recall_at_1pct_fpr",
                "recall_at_0_1pct_fpr"):  # fmt: skip
        table.add_row(key, str(metrics[key]))
    for name in ("review", "decline"):
        t = metrics[name]
        table.add_row(
            f"{name} threshold",
            f"{t['score']} (precision {t['precision']}, recall {t['recall']}, FPR {t['fpr']})",
        )
    return table


def _print_calibration(meta: dict[str, Any]) -> None:
    """How reliable the version's probability is on the evaluation split, or that it has no
    calibration (versions from before it serve the raw score as the probability)."""
    calibration = meta.get("calibration")
    if calibration is None:
        out.print("probability: uncalibrated (the raw score)")
        return
    out.print(f"probability: {calibration['method']} calibration "
              f"({len(calibration['scores'])} points, fitted on the validation split)")  # fmt: skip
    figures = meta["metrics"]["calibration"]
    table = Table("", "ECE", "Brier", title="reliability, evaluation split")
    table.add_row("calibrated", str(figures["ece"]), str(figures["brier"]))
    table.add_row("raw score", str(figures["ece_uncalibrated"]), str(figures["brier_uncalibrated"]))
    out.print(table)


@contextmanager
def _rounds(quiet: bool) -> Iterator[Any]:
    if quiet or not err.is_terminal:
        yield lambda _done, _total: None
        return
    columns = (TextColumn("boosting rounds"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("train", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def train_cmd(
    data: DataOpt,
    registry: RegistryOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for LightGBM's sampling.")] = 7,
    promote: Annotated[
        bool,
        typer.Option("--promote", help="Make it current if the gate passes on the same data."),
    ] = False,
    tolerance: ToleranceOpt = 0.01,
    mapping: MappingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train LightGBM on a time split, export ONNX, write a new registry version."""
    workflow = _workflow()
    from models.training.trainer import TrainConfig
    from services.core.signals import load_signals

    signals = load_signals(load_settings().model.signals)
    with _rounds(as_json) as on_round:
        published = workflow.train_and_publish(
            data, _registry(registry), TrainConfig(seed=seed), promote, on_round, tolerance,
            mapping, signals,
        )  # fmt: skip
    meta = published.metadata
    if as_json:
        candidate, current = published.gate
        _print_json({"version": published.version, "promoted": published.promoted,
                     "refused": published.refused, "note": published.note,
                     "candidate_pr_auc": candidate,
                     "previous_pr_auc": current, **meta})  # fmt: skip
    else:
        out.print(_metrics_table(meta["metrics"], f"{published.version}: evaluation split"))
        _print_calibration(meta)
        state = "current" if published.promoted else "not promoted (fraudstream models promote)"
        out.print(f"{published.version} written, {state}; PR curve: pr_curve.png in the version")
    if published.note:
        err.print(published.note)
    if published.refused:
        err.print(published.refused)
        raise typer.Exit(1)


@models_app.command("list")
def list_cmd(registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Versions with their data and figures; the current one marked."""
    reg = _registry(registry)
    current = reg.current()
    rows = []
    for version in reg.versions():
        meta = reg.metadata(version)
        rows.append({
            "version": version, "current": version == current, "kind": meta["kind"],
            "source": meta["data"]["source"], "rows": meta["data"]["rows"],
            "pr_auc": meta["metrics"]["pr_auc"], "roc_auc": meta["metrics"]["roc_auc"],
        })  # fmt: skip
    if as_json:
        _print_json({"current": current, "versions": rows})
        return
    table = Table("", "version", "kind", "data", "rows", "PR-AUC", "ROC-AUC")
    for row in rows:
        table.add_row("*" if row["current"] else "", *(str(row[k]) for k in (
            "version", "kind", "source", "rows", "pr_auc", "roc_auc")))  # fmt: skip
    out.print(table)


@models_app.command("show")
def show_cmd(version: str, registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """A version's metadata: features, data fingerprint, parameters, metrics, thresholds,
    calibration."""
    meta = _registry(registry).metadata(version)
    if as_json:
        _print_json(meta)
        return
    data = meta["data"]
    out.print(
        f"{version}: {meta['kind']} model on {data['source']} "
        f"({data['rows']} rows, fingerprint {data['fingerprint'][:12]})"
    )
    out.print("features: " + ", ".join(meta["feature_names"]))
    out.print(_metrics_table(meta["metrics"], "evaluation split"))
    _print_calibration(meta)


@models_app.command("promote")
def promote_cmd(
    version: str,
    registry: RegistryOpt = None,
    data: Annotated[
        Path | None, typer.Option(help="Compare candidate and current on this data.")
    ] = None,
    tolerance: ToleranceOpt = 0.01,
    force: Annotated[bool, typer.Option("--force", help="Skip the gate.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a version current, unless it is worse than the current one beyond the tolerance."""
    reg = _registry(registry)
    previous = reg.current()
    candidate, current = _workflow().promote_through_gate(reg, version, tolerance, force, data)
    if as_json:
        _print_json({"current": version, "previous": previous, "candidate_pr_auc": candidate,
                     "previous_pr_auc": current})  # fmt: skip
    else:
        out.print(f"current: {version} (was {previous})")


@models_app.command("rollback")
def rollback_cmd(registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Point current back to the version before the latest promotion."""
    reg = _registry(registry)
    previous = reg.current()
    version = reg.rollback()
    if as_json:
        _print_json({"current": version, "previous": previous})
    else:
        out.print(f"current: {version} (was {previous})")


@models_app.command("evaluate")
def evaluate_cmd(
    version: str,
    data: DataOpt,
    registry: RegistryOpt = None,
    all_rows: Annotated[
        bool, typer.Option("--all-rows", help="Every row, not only the later time split.")
    ] = False,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="Earlier labelled data: features over it, then --data, and every row of --data"
            " scored (the stream's view of a later period).",
        ),
    ] = None,
    mapping: MappingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A version's figures on any labelled file, without training."""
    metrics = _workflow().evaluate_version(
        _registry(registry), version, data, all_rows, history, mapping
    )
    if as_json:
        _print_json({"version": version, **metrics.as_dict()})
    else:
        out.print(_metrics_table(metrics.as_dict(), f"{version} on {data.name}"))


@models_app.command("shadow")
def shadow_cmd(
    version: Annotated[
        str | None, typer.Argument(help="The version; none: show the shadow.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="No shadow from now on.")] = False,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Name the version the scoring service scores beside the current one, not acted on:
    every decision then records both scores (`models compare` judges them)."""
    if clear and version is not None:
        raise UserError("give a version or --clear, not both")
    reg = _registry(registry)
    if clear or version is not None:
        reg.set_shadow(None if clear else version)
    shadow = reg.shadow()
    if as_json:
        _print_json({"current": reg.current(), "shadow": shadow})
    else:
        out.print(f"shadow: {shadow or 'none'} (current: {reg.current()})")
