"""``fraudstream topics``: the pipeline's topics on a broker of the user's (the embedded stack
makes its own), the strategy topic compacted."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from services.cli.options import kafka_settings
from services.core import kafka

topics_app = typer.Typer(help="The pipeline's Kafka topics.", no_args_is_help=True)
err = Console(stderr=True)


@topics_app.command("create")
def create_cmd(
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Partitions of the transactions topic and those keyed alike "
            "(decisions, alerts); others get one. Default: FRAUDSTREAM_STACK_PARTITIONS.",
        ),
    ] = None,
    replication_factor: Annotated[
        int, typer.Option(min=1, max=32, help="Copies of each partition (3 on a real cluster).")
    ] = 1,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for the broker.")] = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
) -> None:
    """Create every topic the pipeline uses; existing ones are kept as they are.

    Idempotent: the chart runs it before the job and the feedback app start.
    """
    made = kafka.create_topics(kafka_settings(), timeout, partitions, replication_factor)
    if as_json:
        print(json.dumps(made))
    else:
        for name, count in made.items():
            err.print(f"{name}: {count} partitions", highlight=False)
