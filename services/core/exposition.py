"""Every component's Prometheus registry, and serving it over HTTP (the job's workers, the
feedback app; the scoring service serves its own on its API port).

A component registry carries the process and platform collectors and
``fraudstream_build_info{version,commit}``; ``_created`` series are off (they double every
counter's series and no dashboard or rule reads them).
"""

from __future__ import annotations

import contextlib
import os
from importlib import metadata

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    start_http_server,
)

PORT_ATTEMPTS = 16
COMMIT_VARIABLE = "FRAUDSTREAM_BUILD_COMMIT"  # set by the image build; unset: "unknown"


def component_registry() -> CollectorRegistry:
    """A fresh registry with what every component reports besides its own metrics."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(PROCESS_COLLECTOR)
    registry.register(PLATFORM_COLLECTOR)
    info = Gauge("fraudstream_build_info", "1, labelled with the running build",
                 ["version", "commit"], registry=registry)  # fmt: skip
    info.labels(_version(), os.environ.get(COMMIT_VARIABLE, "unknown")).set(1)
    return registry


def _version() -> str:
    try:
        return metadata.version("fraudstream")
    except metadata.PackageNotFoundError:
        return "unknown"


def serve_metrics(registry: CollectorRegistry, host: str, first_port: int) -> int | None:
    """Serve on ``host`` at the first free port from ``first_port``; None if disabled (0) or
    every port of the range is taken."""
    if first_port == 0:
        return None
    for port in range(first_port, first_port + PORT_ATTEMPTS):
        with contextlib.suppress(OSError):
            start_http_server(port, addr=host, registry=registry)
            return port
    return None
