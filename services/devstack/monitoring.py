"""The local Prometheus of ``stack up --monitoring``: it scrapes every component of the
embedded stack under the scrape job names the rules use, and loads the project's rules.

The servers are the OS packages' ``prometheus`` and ``prometheus-pushgateway`` (``apt-get
install prometheus prometheus-pushgateway``), found on PATH or at
``FRAUDSTREAM_STACK_PROMETHEUS`` and ``FRAUDSTREAM_STACK_PUSHGATEWAY``; both listen on loopback
only. The local job pushes Flink's own metrics to the Pushgateway (Flink's scraped reporter
would listen on every interface); Prometheus scrapes it, keeping the labels Flink gave.
"""

from __future__ import annotations

import json
import secrets
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.core.errors import UserError
from services.core.settings import Settings
from services.devstack import processes

RULES = Path(__file__).resolve().parents[2] / "helm" / "fraudstream" / "monitoring" / "rules.yml"
SCRAPE_INTERVAL_S = 5  # fine enough for a demo's charts and the rules' 5-minute windows
JOBS = {"scoring": "fraudstream-scoring", "job": "fraudstream-job",
        "feedback": "fraudstream-feedback", "flink": "fraudstream-flink"}  # fmt: skip
PUSHED = {"flink"}  # scraped from the Pushgateway: the pushed labels are kept
_LOWEST_PORT = 10_000  # clear of the settings' fixed ports (9249-9320)


class MonitoringError(UserError):
    """The local Prometheus cannot start; the message says how to get it."""


def _binary(configured: Path | None, name: str, setting: str) -> Path:
    found = configured or shutil.which(name)
    if not found or not Path(found).is_file():
        raise MonitoringError(
            f"no {name}: `apt-get install --no-install-recommends {name}`, or set {setting} "
            "to its binary"
        )
    return Path(found)


def binary(settings: Settings) -> Path:
    return _binary(settings.stack.prometheus, "prometheus", "FRAUDSTREAM_STACK_PROMETHEUS")


def pushgateway_argv(settings: Settings) -> Callable[[int], list[str]]:
    server = _binary(
        settings.stack.pushgateway, "prometheus-pushgateway", "FRAUDSTREAM_STACK_PUSHGATEWAY"
    )
    # In memory only: Flink pushes everything anew every 5 s.
    return lambda port: [
        str(server),
        f"--web.listen-address=127.0.0.1:{port}",
        "--persistence.file=",
    ]


def free_port_range(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive ports free on loopback now: the job's workers take
    one each from it, so a stack's Prometheus scrapes its own job, never another stack's.
    Drawn at random below the kernel's ephemeral range, where nothing that binds port 0 (a
    broker's client, Beam's gRPC servers of the job itself) takes one before the job does."""
    for _ in range(attempts):
        first = _candidate(count)
        if all(processes.bindable(port) for port in range(first, first + count)):
            return first
    raise MonitoringError(f"no {count} consecutive free ports on 127.0.0.1")


def _candidate(count: int) -> int:
    return _LOWEST_PORT + secrets.randbelow(ephemeral_start() - count - _LOWEST_PORT)


def ephemeral_start() -> int:
    """The first port the kernel hands out for port 0 (Linux's default: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def targets(
    settings: Settings, scoring_url: str | None, pushgateway_url: str | None, feedback: bool
) -> dict[str, list[str]]:
    """Scrape targets per component: the job's workers take one port each from its first
    (``stack up`` chose it free and recorded it: ``StackEndpoints.job_metrics_port``)."""
    job = settings.job
    found = {"job": [f"127.0.0.1:{job.metrics_port + i}" for i in range(job.parallelism)]}
    if scoring_url:
        found["scoring"] = [scoring_url.removeprefix("http://")]
    if feedback and settings.feedback.metrics_port:
        found["feedback"] = [f"127.0.0.1:{settings.feedback.metrics_port}"]
    if pushgateway_url:
        found["flink"] = [pushgateway_url.removeprefix("http://")]
    return found


def write_config(directory: Path, scrape: dict[str, list[str]]) -> Path:
    """The server's configuration (JSON is YAML), with the rules loaded."""
    directory.mkdir(parents=True, exist_ok=True)
    interval = f"{SCRAPE_INTERVAL_S}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": JOBS[name],
                "static_configs": [{"targets": hosts}],
                "honor_labels": name in PUSHED,
            }
            for name, hosts in scrape.items()
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def argv(settings: Settings, config: Path) -> Callable[[int], list[str]]:
    data = config.parent / "data"
    server = binary(settings)

    def command(port: int) -> list[str]:
        return [
            str(server), f"--config.file={config}", f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=2d",
        ]  # fmt: skip

    return command


def ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
        return bool(reply.status == 200)
