"""``fraudstream workbench``: the analysts' page, and their accounts."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from services.cli.options import kafka_settings
from services.cli.options import setting_option as _opt
from services.core.errors import MissingExtra
from services.core.settings import load_settings

workbench_app = typer.Typer(
    help="The analysts' workbench: the alert queue, cases and their outcomes, on a web page.",
    invoke_without_command=True,
)
user_app = typer.Typer(help="Analysts' accounts (roles analyst and lead).", no_args_is_help=True)
workbench_app.add_typer(user_app, name="user")


@workbench_app.callback()
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, _opt("workbench_host", "Address to bind", "host")] = None,
    port: Annotated[int | None, _opt("workbench_port", "Port to serve on", "port")] = None,
) -> None:
    """Serve the page (loopback by default) and take alerts in as cases, until SIGTERM."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        from services.workbench.server import serve
    except ImportError as error:
        raise MissingExtra("workbench", error.name) from None

    serve(kafka_settings(workbench_host=host, workbench_port=port))


@user_app.command("add")
def user_add_cmd(
    name: Annotated[str, typer.Argument(help="The analyst's sign-in name (a-z, 0-9, . _ -).")],
    lead: Annotated[
        bool, typer.Option("--lead", help="May publish and roll back strategies.")
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add an account; the password is asked for (twice) unless given on standard input."""
    try:
        from sqlalchemy.orm import Session

        from services.workbench import accounts
        from services.workbench.cases import Role
        from services.workbench.server import database_url
        from services.workbench.store import engine
    except ImportError as error:
        raise MissingExtra("workbench", error.name) from None

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = load_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = engine(database_url(settings))
    with Session(store) as session, session.begin():
        accounts.add(session, name, password, Role.LEAD if lead else Role.ANALYST)
    typer.echo(f"added {name} ({'lead' if lead else 'analyst'})")
