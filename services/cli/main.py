"""The ``fraudstream`` command line: thin adapters over the services; no logic lives here.

Every option that maps onto a setting shows its environment variable in ``--help``. Errors
are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from models.errors import ExportError, LakeError, RegistryError
from models.training.dataset_files import labels_path
from services.cli.backtest import backtest_cmd
from services.cli.chargebacks import chargebacks_app
from services.cli.compare import compare_cmd
from services.cli.drift import drift_cmd
from services.cli.feedback import features_cmd, feedback_app_cmd, feedback_cmd
from services.cli.lake import erase_cmd, lake_app
from services.cli.models import models_app, train_cmd
from services.cli.options import kafka_settings
from services.cli.options import setting_option as _opt
from services.cli.retrain import retrain_cmd
from services.cli.signals import signals_app
from services.cli.strategy import lists_app, rules_app
from services.cli.stream import alerts_cmd, cluster_app, demo_cmd, job_app, verify_cmd
from services.cli.topics import topics_app
from services.cli.workbench import workbench_app
from services.clients import produce as producing
from services.clients import reading
from services.core.contract import InvalidEvent, parse_event_time
from services.core.errors import MissingExtra, UserError
from services.core.kafka_check import check_kafka
from services.core.mapping import load_mapping
from services.core.redis_check import check_redis
from services.core.settings import Settings, load_settings, resolve
from services.core.settings import env_var as _env
from services.core.signals import load_signals
from services.devstack import stack
from services.devstack.processes import free_loopback_port, is_running
from services.devstack.state import StackState
from services.generator import GeneratorConfig, start_ending_now

app = typer.Typer(
    name="fraudstream",
    help="Real-time streaming fraud detection.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
stack_app = typer.Typer(help="The embedded local stack: broker, Redis, scoring service.")
app.add_typer(stack_app, name="stack")
redis_app = typer.Typer(help="The online feature store in Redis.")
app.add_typer(redis_app, name="redis")
app.add_typer(models_app, name="models")
app.add_typer(job_app, name="job")
app.add_typer(lake_app, name="lake")
app.add_typer(signals_app, name="signals")
app.add_typer(rules_app, name="rules")
app.add_typer(lists_app, name="lists")
app.add_typer(topics_app, name="topics")
app.add_typer(chargebacks_app, name="chargebacks")
app.add_typer(workbench_app, name="workbench")
app.command("backtest")(backtest_cmd)
models_app.command("drift")(drift_cmd)
models_app.command("compare")(compare_cmd)
app.command("retrain")(retrain_cmd)
app.command("train")(train_cmd)
app.command("verify")(verify_cmd)
app.command("demo")(demo_cmd)
app.command("alerts")(alerts_cmd)
app.command("feedback")(feedback_cmd)
app.command("features")(features_cmd)
app.command("feedback-app")(feedback_app_cmd)
app.command("erase")(erase_cmd)
out = Console()
err = Console(stderr=True)


BootstrapOpt = Annotated[
    str | None, _opt("kafka_bootstrap_servers", "Kafka bootstrap servers", "bootstrap-servers")
]
StateDirOpt = Annotated[Path | None, _opt("state_dir", "Embedded stack state directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


@app.callback(invoke_without_command=True)
@stack_app.callback(invoke_without_command=True)
@redis_app.callback(invoke_without_command=True)
@models_app.callback(invoke_without_command=True)
@job_app.callback(invoke_without_command=True)
@cluster_app.callback(invoke_without_command=True)
def _help_without_command(ctx: typer.Context) -> None:
    """Without a command, show help (and exit 2: nothing was done)."""
    if ctx.invoked_subcommand is None:
        out.print(ctx.get_help(), markup=False, highlight=False)
        raise typer.Exit(2)


@app.command("config")
def config_cmd(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings, secrets masked, and where each value came from."""
    resolved = resolve(state_dir=state_dir)
    values = resolved.settings.masked()
    if as_json:
        _print_json({name: {"value": value, "source": resolved.sources[name]}
                     for name, value in values.items()})  # fmt: skip
        return
    table = Table("setting", "environment variable", "value", "source")
    for name, value in values.items():
        shown = "" if value is None else str(value)
        table.add_row(name, _env(name), shown, resolved.sources[name])
    out.print(table)


@stack_app.command("up")
def stack_up(
    partitions: Annotated[
        int | None,
        _opt("stack_partitions", "Partitions of the keyed topics", "partitions"),
    ] = None,
    broker: Annotated[
        str | None, _opt("stack_broker", "The broker: tansu (default) or kafka", "broker")
    ] = None,
    broker_port: Annotated[
        int | None, _opt("stack_broker_port", "Broker port (0: a free one)", "broker-port")
    ] = None,
    redis_port: Annotated[
        int | None, _opt("stack_redis_port", "Redis port (0: a free one)", "redis-port")
    ] = None,
    redis_cluster: Annotated[
        bool | None,
        typer.Option(
            "--redis-cluster/--no-redis-cluster",
            help="A 3-master Redis Cluster instead of one Redis (FRAUDSTREAM_STACK_REDIS_CLUSTER).",
            show_default=False,
        ),
    ] = None,
    monitoring: Annotated[
        bool | None,
        typer.Option(
            "--monitoring/--no-monitoring",
            help="Also a Prometheus server scraping the stack, the project's rules loaded, and "
            "a Pushgateway for Flink's own metrics (FRAUDSTREAM_STACK_MONITORING).",
            show_default=False,
        ),
    ] = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start broker, Redis and the scoring service on loopback, create the topics."""
    settings = load_settings(
        stack_partitions=partitions,
        stack_broker=broker,
        stack_broker_port=broker_port,
        stack_redis_port=redis_port,
        stack_redis_cluster=redis_cluster,
        stack_monitoring=monitoring,
        state_dir=state_dir,
    )
    with (
        err.status("starting broker, Redis and the scoring service…", spinner="dots")
        if err.is_terminal
        else nullcontext()
    ):
        state = stack.up(settings)
    _show_stack(state, as_json)


@stack_app.command("status")
def stack_status(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Show what the embedded stack runs (exit 1 when nothing is recorded)."""
    state = stack.status(load_settings(state_dir=state_dir))
    if state is None:
        if as_json:
            _print_json({"running": False})
        else:
            err.print("no stack recorded: run `fraudstream stack up`")
        raise typer.Exit(1)
    _show_stack(state, as_json)


@stack_app.command("down")
def stack_down(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Stop exactly the processes `stack up` started; safe to repeat."""
    stopped = stack.down(load_settings(state_dir=state_dir))
    if as_json:
        _print_json({"stopped": stopped})
    else:
        out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("fetch-kafka")
def stack_fetch_kafka(state_dir: StateDirOpt = None) -> None:
    """Fetch Apache Kafka's jars with Maven into the cache (once); print where they are."""
    from services.devstack import kafka_broker

    settings = load_settings(state_dir=state_dir)
    out.print(str(kafka_broker.fetch(settings.stack.kafka_cache)))


@redis_app.command("migrate")
def redis_migrate(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a store of layout v2 to v3 (ids escaped in key names): histories, labels and
    blocklists kept with their TTLs. Run it before starting the v3 job (a card it has seen
    since keeps only its history since); safe to repeat."""
    from models.online.migration import migrate_v2

    settings = load_settings(state_dir=state_dir)
    check_redis(settings.redis)
    done = migrate_v2(settings.redis.client(), dry_run)
    report = dataclasses.asdict(done) | {"unreadable": len(done.unreadable)}
    if as_json:
        _print_json(report)
    else:
        out.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.items()))


@stack_app.command("restart")
def stack_restart(
    component: Annotated[
        str, typer.Argument(help=f"One of: {', '.join(stack.COMPONENTS)}.", show_default=False)
    ],
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restart one component of the running stack on its port; the others keep running."""
    known = (*stack.COMPONENTS, *stack.cluster_node_names()[1:])
    if component not in known:
        raise UserError(f"no component {component!r}: one of {', '.join(known)}")
    _show_stack(stack.restart(load_settings(state_dir=state_dir), component), as_json)


def _show_stack(state: StackState, as_json: bool) -> None:
    running = {p.name: is_running(p) for p in state.processes}
    if as_json:
        _print_json(
            {
                "running": all(running.values()),
                "broker": state.broker,
                "bootstrap_servers": state.bootstrap_servers,
                "redis_url": state.redis_url,
                "redis_cluster": state.redis_cluster,
                "scoring_url": state.scoring_url,
                "prometheus_url": state.prometheus_url,
                "workbench_url": state.workbench_url,
                "pushgateway_url": state.pushgateway_url,
                "job_metrics_port": state.job_metrics_port,
                "topics": state.topics,
                "pids": {p.name: p.pid for p in state.processes},
                "alive": running,
                "java_home_found": state.java_home is not None,
            }
        )
        return
    table = Table("component", "endpoint", "pid", "state")
    endpoints = {
        "broker": state.bootstrap_servers,
        "redis": state.redis_url + (" (cluster)" if state.redis_cluster else ""),
        "scoring": state.scoring_url or "",
        "prometheus": state.prometheus_url or "",
        "workbench": state.workbench_url or "",
        "pushgateway": state.pushgateway_url or "",
    }
    names = stack.cluster_node_names()
    for name, port in zip(names[1:], state.redis_cluster_ports[1:], strict=False):
        endpoints[name] = f"redis://127.0.0.1:{port}/0"
    for p in state.processes:
        table.add_row(
            p.name, endpoints.get(p.name, ""), str(p.pid), "up" if running[p.name] else "DOWN"
        )
    out.print(table)
    out.print("topics: " + ", ".join(f"{t} ({n})" for t, n in state.topics.items()))
    out.print(f"broker: {state.broker}. Commands run with this state directory use these "
              "endpoints for what is not set (`fraudstream config` shows it; "
              "FRAUDSTREAM_STACK_ENDPOINTS=false: never).", highlight=False)  # fmt: skip
    if state.java_home is None:
        out.print("[yellow]no Java 17/21 found: install the job extra for PyFlink[/yellow]")
    if state.scoring_url is None:
        out.print("[yellow]no scoring service: install the serve extra[/yellow]")
    if state.workbench_url:
        out.print(f"the analysts' workbench: {state.workbench_url} (an account: "
                  "`fraudstream workbench user add NAME`)", highlight=False)  # fmt: skip


@app.command("produce")
def produce_cmd(
    count: Annotated[int, typer.Option(min=1, help="Events to send (generator).")] = 10_000,
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second; 0: as fast as possible.")
    ] = 1000.0,
    seed: Annotated[
        int | None, typer.Option(help="Generator seed; default: random, printed.")
    ] = None,
    fraud_rate: Annotated[
        float, typer.Option(min=0, max=0.5, help="Share of fraud events.")
    ] = 0.005,
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers.")] = 20_000,
    start: Annotated[
        str | None,
        typer.Option(
            help="Simulated start time (RFC 3339); default: so that the events end within the "
            "day before now."
        ),
    ] = None,
    attributes: Annotated[
        bool,
        typer.Option(
            "--attributes",
            help="Generate the attributes of the generator's signals file (fraudstream signals"
            " generated) and the fraud only they show.",
        ),
    ] = False,
    from_csv: Annotated[
        Path | None,
        typer.Option("--from-csv", help="Replay a public card-transaction CSV instead."),
    ] = None,
    from_jsonl: Annotated[
        Path | None,
        typer.Option("--from-jsonl", help="Send transactions from JSON lines (as --out writes)."),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(help="Read --from-csv/--from-jsonl through this mapping file (any layout)."),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write JSON lines to this file instead of Kafka.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Label side file (CSV); default: beside --out, else in the state dir."),
    ] = None,
    bootstrap_servers: BootstrapOpt = None,
    topic: Annotated[str | None, _opt("topic_transactions", "Topic to publish to", "topic")] = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish realistic synthetic transactions (or replay a CSV) keyed by card_id."""
    settings = load_settings(kafka_bootstrap_servers=bootstrap_servers, state_dir=state_dir)
    rejected: list[str] = []
    extra: dict[str, Any] = {}
    if from_csv and from_jsonl:
        raise UserError("--from-csv and --from-jsonl: give one source")
    source = from_csv or from_jsonl
    if mapping is not None and source is None:
        raise UserError("--mapping reads --from-csv or --from-jsonl: give one")
    if source is None:
        extra["seed"] = seed if seed is not None else random.SystemRandom().randrange(2**31)
        config = GeneratorConfig(seed=extra["seed"], customers=customers, fraud_rate=fraud_rate,
                                 attributes=attributes)  # fmt: skip
        config = dataclasses.replace(config, start_ms=_start_ms(start, config, count))
        items = producing.generated_items(config, count)
        total: int | None = count
    else:

        def reject(line: int, bad: InvalidEvent) -> None:
            rejected.append(f"line {line}: {bad.field}: {bad.reason}")

        if mapping is not None:
            mapped = load_mapping(mapping, load_signals(settings.model.signals))
            items = producing.mapped_items(source, mapped, reject)
        else:
            items = (producing.csv_items if from_csv else producing.jsonl_items)(source, reject)
        first = list(itertools.islice(items, 1))  # a missing or bad file fails here
        items = itertools.chain(first, items)
        total = None
    if out_file is None:  # the input is known good by now: then Kafka's login
        check_kafka(settings.kafka)
    sink: producing.Sink = (
        producing.FileSink(out_file)
        if out_file
        else producing.KafkaSink(settings, topic or settings.topic.transactions)
    )
    if labels is None and (not from_jsonl or mapping):  # plain JSON lines carry no labels
        labels = _default_labels(out_file, settings)
    with _progress(total, quiet=as_json) as advance:
        summary = producing.run(items, sink, rate=rate, labels=labels, on_progress=advance)
    summary.rejected = len(rejected)
    report = dataclasses.asdict(summary) | extra
    if as_json:
        _print_json(report)
    else:
        _show_produce(report, rejected)
    if summary.failed:
        raise typer.Exit(1)


@app.command("serve")
def serve_cmd(
    port: Annotated[int | None, _opt("scoring_port", "Port (0: a free one)", "port")] = None,
    host: Annotated[str | None, _opt("scoring_host", "Address to listen on", "host")] = None,
    registry: Annotated[
        Path | None, _opt("model_registry", "Model registry directory", "registry")
    ] = None,
    signals: Annotated[
        Path | None, _opt("model_signals", "Signals file of the features the job sends", "signals")
    ] = None,
    shadow: Annotated[
        str | None, _opt("scoring_shadow_version", "Shadow model version", "shadow")
    ] = None,
    workers: Annotated[int | None, _opt("scoring_workers", "Server processes", "workers")] = None,
    threads: Annotated[
        int | None, _opt("scoring_threads", "ONNX Runtime threads per request", "threads")
    ] = None,
) -> None:
    """Serve the registry's current model over HTTP (POST /v1/score) until SIGTERM.

    Reloads a newly promoted model without a restart; FRAUDSTREAM_SCORING_TOKEN turns on
    bearer-token auth.
    """
    settings = load_settings(scoring_port=port, scoring_host=host, model_registry=registry,
                             model_signals=signals, scoring_shadow_version=shadow,
                             scoring_workers=workers, scoring_threads=threads)  # fmt: skip
    try:
        from services.scoring.server.app import serve
    except ImportError as error:
        raise MissingExtra("serve", error.name) from None
    if settings.scoring.require_token and settings.scoring.token is None:
        raise UserError(
            "FRAUDSTREAM_SCORING_REQUIRE_TOKEN: no FRAUDSTREAM_SCORING_TOKEN (or scoring_token "
            "in the secrets directory): refusing to serve open"
        )
    chosen = settings.scoring.port or free_loopback_port()
    err.print(f"scoring service on http://{settings.scoring.host}:{chosen}", highlight=False)
    serve(settings, chosen)


@app.command("read")
def read_cmd(
    topic: Annotated[str, typer.Argument(help="Topic to read from the beginning.")],
    count: Annotated[int, typer.Option(min=1, help="Stop after this many messages.")] = 1_000,
    timeout: Annotated[float, typer.Option(min=0.1, help="Stop after this many seconds.")] = 30.0,
    bootstrap_servers: BootstrapOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a topic's messages (JSON lines) until --count or --timeout; --json: a summary only.

    Reads by assigning partitions (no consumer group), so it starts at once and never commits.
    Exit 1 when fewer than --count messages arrived before the timeout.
    """
    settings = kafka_settings(kafka_bootstrap_servers=bootstrap_servers, state_dir=state_dir)
    summary = reading.read_summary(settings, topic, count, timeout, None if as_json else _echo)
    if as_json:
        _print_json(dataclasses.asdict(summary))
    else:
        err.print(
            f"read {summary.messages} messages, {summary.distinct_transaction_ids} distinct "
            f"transaction ids, {summary.not_json} not JSON objects"
        )
    if summary.messages < count:
        raise typer.Exit(1)


def _echo(value: bytes) -> None:
    sys.stdout.buffer.write(value + b"\n")


def _default_labels(out_file: Path | None, settings: Settings) -> Path:
    """Beside the events file (where training looks for them), else in the state dir."""
    if out_file is not None:
        return labels_path(out_file)
    return settings.state_dir / "labels.csv"


def _start_ms(text: str | None, config: GeneratorConfig, count: int) -> int:
    if text is None:  # the simulated events end by now, not hours ahead of the clock
        return start_ending_now(config, count, int(time.time() * 1000))
    try:
        return parse_event_time(text, "start")
    except ValueError as error:
        raise typer.BadParameter(str(error).split(" - at")[0], param_hint="'--start'") from None


def _show_produce(report: dict[str, Any], rejected: list[str]) -> None:
    table = Table("sent", "delivered", "failed", "fraud", "events/s", "seconds")
    table.add_row(
        *(
            str(report[k])
            for k in ("sent", "delivered", "failed", "fraud", "events_per_s", "seconds")
        )
    )
    out.print(table)
    if "seed" in report:
        out.print(f"seed: {report['seed']}")
    if rejected:
        err.print(f"rejected {len(rejected)} invalid rows, first: " + "; ".join(rejected[:3]))
    for error in report.get("first_errors") or []:
        err.print(f"delivery error: {error}")


@contextmanager
def _progress(total: int | None, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; nothing when quiet or not interactive."""
    if quiet or not err.is_terminal:
        yield lambda _n: None
        return
    columns = (TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("produce", total=total)
        yield lambda n: progress.update(task, completed=n)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Console entry point: run the app, turning every expected failure into one line."""
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit instead of raising
    except typer.Exit as done:
        code = done.exit_code
    except typer.Abort:
        _fail("aborted", 130)
    except typer.TyperException as error:  # usage errors: bad flag, bad value, missing argument
        _fail(error.format_message().replace("\n", " "), error.exit_code)
    except ValidationError as error:
        first = error.errors()[0]
        field = "_".join(str(p) for p in first["loc"])  # the flat name: FRAUDSTREAM_<FIELD>
        _fail(f"{field}: {first['msg'].removeprefix('Value error, ')}")
    except (UserError, ValueError, OSError, ExportError, LakeError, RegistryError) as error:
        _fail(str(error), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
