"""Serving a component's Prometheus registry over HTTP (the job's workers, the feedback app)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, start_http_server

PORT_ATTEMPTS = 16


def serve_metrics(registry: CollectorRegistry, first_port: int) -> int | None:
    """Serve on the first free port from ``first_port``; None if disabled (0) or all taken."""
    if first_port == 0:
        return None
    for port in range(first_port, first_port + PORT_ATTEMPTS):
        with contextlib.suppress(OSError):
            start_http_server(port, addr="127.0.0.1", registry=registry)
            return port
    return None
