"""``fraudstream rules ...`` and ``fraudstream lists ...``: the strategy a fraud team steers the
job with, changed at run time without a restart."""

from __future__ import annotations

import getpass
import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from models.online import lists
from services.core.contract import parse_event_time
from services.core.errors import UserError
from services.core.settings import load_settings
from services.core.signals import load_signals
from stream_jobs import strategy as st
from stream_jobs import strategy_feed as feed

rules_app = typer.Typer(help="Strategy documents: validate, publish, list, show, diff, roll back.")
lists_app = typer.Typer(
    help="Allow- and block-lists of cards, devices, merchants, BINs, countries."
)
out = Console()
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}

FileArg = Annotated[Path, typer.Argument(help="A strategy document (YAML or JSON).")]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _time_ms(text: str, what: str) -> int:
    """An RFC 3339 time, or a duration from now (``30s``, ``15m``, ``2h``, ``30d``)."""
    match = _DURATION.match(text)
    if match:
        return _now_ms() + int(match[1]) * _SECONDS[match[2]] * 1000
    try:
        return parse_event_time(text, what)
    except ValueError as error:
        raise UserError(f"--{what}: {error}") from None


@rules_app.command("validate")
def validate_cmd(path: FileArg) -> None:
    """Compile every rule and evaluate it on typed sample rows: one line per problem."""
    document = st.load(path)
    problems = st.check(document, load_signals(load_settings().model.signals))
    if problems:
        raise UserError("\n".join(f"{path.name}: {p}" for p in problems))
    states = [r.state for r in document.rules]
    out.print(
        f"{path.name}: valid: {len(states)} rules ({states.count('active')} active, "
        f"{states.count('shadow')} shadow, {states.count('paused')} paused), "
        f"{len(document.tables)} tables, thresholds by {document.thresholds.mode}"
    )


@rules_app.command("publish")
def publish_cmd(
    path: FileArg,
    at: Annotated[
        str | None,
        typer.Option(
            help="When it takes effect (event time): RFC 3339, or from now (10m, 2h). Default: "
            "the document's effective_from, else in 10 s."
        ),
    ] = None,
) -> None:
    """Publish the document as the next version: every job worker applies it, by event time."""
    document = st.load(path)
    if at is not None:
        document = document.model_copy(update={"effective_from": _time_ms(at, "at")})
    settings = load_settings()
    published = feed.publish(settings, document, load_signals(settings.model.signals))
    out.print(f"published version {published.version}, in force from {published.effective}")


def _versions() -> list[st.Strategy]:
    """The shipped version and every published one not revoked."""
    return [st.default(), *feed.read_published(load_settings()).live]


def _in_force(versions: list[st.Strategy]) -> st.Strategy:
    chosen = st.in_force(versions, _now_ms())
    assert chosen is not None  # the default is in force from 0
    return chosen


@rules_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every version, the one in force now marked."""
    versions = _versions()
    now = _in_force(versions).version
    rows = [
        {
            "version": s.version,
            "effective_from": s.effective,
            "rules": len(s.rules),
            "in_force": s.version == now,
            "description": s.description,
        }
        for s in versions
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("version", "in force from", "rules", "now", "description")
    for r in rows:
        table.add_row(
            str(r["version"]),
            str(r["effective_from"]),
            str(r["rules"]),
            "*" if r["in_force"] else "",
            str(r["description"]),
        )
    out.print(table)


def _version(versions: list[st.Strategy], wanted: int | None) -> st.Strategy:
    if wanted is None:
        return _in_force(versions)
    for s in versions:
        if s.version == wanted:
            return s
    raise UserError(f"no strategy version {wanted}: `fraudstream rules list` shows them")


@rules_app.command("show")
def show_cmd(
    version: Annotated[int | None, typer.Argument(help="Default: in force now.")] = None,
    draft: Annotated[
        bool,
        typer.Option("--draft", help="Without its version and time: a file to edit and publish."),
    ] = False,
) -> None:
    """A version's whole document, as JSON."""
    document = _version(_versions(), version)
    drafted = {"version", "effective_from", "restores", "replaces"} if draft else set()
    typer.echo(document.model_dump_json(indent=2, exclude=drafted))


def _document(ref: str, versions: list[st.Strategy]) -> st.Strategy:
    return _version(versions, int(ref)) if ref.isdigit() else st.load(Path(ref))


def named_strategy(ref: str | None) -> tuple[str, st.Strategy]:
    """A strategy by file or version (None: the one in force now; 0: the shipped one, without
    Kafka), with the name a backtest report gives it."""
    if ref is not None and not ref.isdigit():
        return Path(ref).name, st.load(Path(ref))
    if ref == "0":
        return "version 0 (shipped)", st.default()
    versions = _versions()
    chosen = _in_force(versions) if ref is None else _version(versions, int(ref))
    return f"version {chosen.version}", chosen


@rules_app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="A version number or a file.")],
    b: Annotated[str, typer.Argument(help="A version number or a file.")],
) -> None:
    """What B changes against A: rules, tables and thresholds, a line each."""
    versions = _versions()
    lines = st.diff(_document(a, versions), _document(b, versions))
    typer.echo("\n".join(lines) if lines else "no difference")


@rules_app.command("rollback")
def rollback_cmd(
    to: Annotated[
        int | None,
        typer.Option(
            help="The version to restore. Default: the good one before the version in force."
        ),
    ] = None,
) -> None:
    """Publish an earlier version's document again, as the next version (in 10 s). Run
    again, it steps further back: a version a rollback undid, and the one a rollback
    restored, are never chosen again."""
    pending = [s.version for s in _versions() if s.effective_from > _now_ms()]
    if pending:
        out.print(f"note: versions {pending} are not in force yet: the rollback supersedes them")
    settings = load_settings()
    restored, published = feed.rollback(settings, load_signals(settings.model.signals), to)
    out.print(
        f"version {restored} published again as version {published.version}, in force from "
        f"{published.effective}"
    )


@rules_app.command("revoke")
def revoke_cmd(version: Annotated[int, typer.Argument(help="A published version.")]) -> None:
    """Withdraw a published version at once, even for the events of its past window not yet
    decided (a backlog): the emergency brake. A replay of that window then decides otherwise
    than the first run did."""
    feed.revoke(load_settings(), version)
    out.print(f"version {version} revoked")


KindArg = Annotated[lists.Kind, typer.Argument(help="card, device, merchant, bin or country.")]
ActionArg = Annotated[lists.Action, typer.Argument(help="block or allow.")]
ValueArg = Annotated[str, typer.Argument(help="The value (a card: its number, id or token).")]


def _names(kind: lists.Kind, value: str) -> list[str]:
    try:
        return lists.names_of(kind, value, load_settings().token.tokenizer())
    except lists.ListError as error:
        raise UserError(str(error)) from None


@lists_app.command("add")
def add_cmd(
    action: ActionArg,
    kind: KindArg,
    value: ValueArg,
    reason: Annotated[str, typer.Option(help="Why (analysts and the audit see it).")],
    expires: Annotated[
        str | None,
        typer.Option(help="When it lapses: RFC 3339, or from now (12h, 30d). Default: never."),
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who adds it. Default: the login name.")] = None,
) -> None:
    """Add an entry: in force in every job worker within a second."""
    names = _names(kind, value)
    expires_ms = None if expires is None else _time_ms(expires, "expires")
    if expires_ms is not None and expires_ms <= _now_ms():
        raise UserError("--expires is in the past")
    entry = lists.Entry(
        action, kind, names[0], reason, by or getpass.getuser(), _now_ms(), expires_ms
    )
    try:
        lists.add(load_settings().redis.client(), entry, names)
    except lists.ListError as error:
        raise UserError(str(error)) from None
    out.print(f"{action} {kind} {names[0]} added")


@lists_app.command("remove")
def remove_cmd(action: ActionArg, kind: KindArg, value: ValueArg) -> None:
    """Remove an entry (a card a fraud disposition blocked too)."""
    names = _names(kind, value)
    removed = lists.withdraw(load_settings().redis.client(), action, kind, names)
    if not removed:
        raise UserError(f"no {action} entry for that {kind}")
    out.print(f"{action} {kind} {names[0]} removed")


@lists_app.command("show")
def show_lists_cmd(
    kind: Annotated[lists.Kind | None, typer.Option(help="Only this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every entry: action, kind, value, reason, who, when, expiry (lapsed ones marked)."""
    now = _now_ms()
    found = {
        e
        for e in lists.entries(load_settings().redis.client()).values()
        if kind is None or e.kind == kind
    }
    rows: list[dict[str, Any]] = sorted(
        ({**_entry_fields(e), "lapsed": not e.live(now)} for e in found),
        key=lambda r: (r["kind"], r["action"], r["value"]),
    )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("action", "kind", "value", "reason", "by", "added", "expires")
    for r in rows:
        table.add_row(
            r["action"],
            r["kind"],
            r["value"],
            r["reason"],
            r["added_by"],
            _iso(r["added_at_ms"]),
            ("lapsed " if r["lapsed"] else "") + _iso(r["expires_at_ms"]),
        )
    out.print(table)


def _entry_fields(entry: lists.Entry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__struct_fields__}


def _iso(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
