"""``fraudstream signals ...``: write a signals file for a data set, and check one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from models.features.entities import signal_feature_names
from services.core.mapping import MappedFile, infer_signals, read_mapping
from services.core.signals import EMPTY, load_signals, to_yaml

signals_app = typer.Typer(help="Signals files: the attributes producers send, the entities.")
out = Console()


@signals_app.command("infer")
def infer_cmd(
    data: Annotated[Path, typer.Argument(help="A CSV, gzipped CSV or JSON-lines file.")],
    mapping: Annotated[Path, typer.Option(help="The mapping file that reads it.")],
    sample: Annotated[int, typer.Option(min=1, help="Rows read to type the columns.")] = 50_000,
) -> None:
    """Print a signals file declaring every attribute the mapping reads, typed from the data
    (numbers, booleans, categories; none personal): review it, mark personal data, add
    entities, save it where the mapping's ``signals`` points."""
    signals = infer_signals(MappedFile(read_mapping(mapping), EMPTY), data, sample)
    print(to_yaml(signals), end="")


@signals_app.command("check")
def check_cmd(path: Annotated[Path, typer.Argument(help="A signals file.")]) -> None:
    """Validate a signals file and list the features it adds to the model's inputs."""
    signals = load_signals(path)
    names = signal_feature_names(signals)
    out.print(f"{path.name}: {len(signals.attributes)} attributes, {len(signals.entities)} "
              f"entities, {len(names)} features: {', '.join(names[:12])}"
              f"{' ...' if len(names) > 12 else ''}")  # fmt: skip


@signals_app.command("generated")
def generated_cmd() -> None:
    """Print the signals file of the generator's attributes (``produce --attributes``)."""
    from services.generator.signals import generated_signals

    print(to_yaml(generated_signals()), end="")
