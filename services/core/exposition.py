"""Every component's Prometheus registry, and serving it over HTTP with health probes (the
job's workers, the feedback app; the scoring service serves its own on its API port):
``/metrics``, ``/healthz`` (the process answers) and ``/readyz`` (200 once the component says
it is ready, 503 with the reason while it is not).

A component registry carries the process and platform collectors and
``fraudstream_build_info{version,commit}``; ``_created`` series are off (they double every
counter's series and no dashboard or rule reads them).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    make_wsgi_app,
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


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds: no access log."""


Readiness = Callable[[], str | None]  # None: ready; else why not


def _app(registry: CollectorRegistry, ready: Readiness) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        why = None if path == "/healthz" else ready()
        start_response("200 OK" if why is None else "503 Service Unavailable",
                       [("Content-Type", "text/plain; charset=utf-8")])  # fmt: skip
        return [b"ok\n" if why is None else f"not ready: {why}\n".encode()]

    return app


def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    first_port: int,
    ready: Readiness = lambda: None,
) -> int | None:
    """Serve on ``host`` at the first free port from ``first_port``; None if disabled (0) or
    every port of the range is taken."""
    if first_port == 0:
        return None
    for port in range(first_port, first_port + PORT_ATTEMPTS):
        with contextlib.suppress(OSError):
            server = make_server(host, port, _app(registry, ready), _Server, handler_class=_Quiet)
            threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
            return port
    return None
