"""The scoring service's HTTP adapter: a bare ASGI app served by uvicorn (httptools, uvloop).

Routes: ``POST /v1/score`` (JSON or msgpack, answered in kind), ``GET /healthz`` (the process
is alive), ``GET /readyz`` (a model is loaded), ``GET /metrics`` (Prometheus). With a token
configured, ``/v1/score`` needs ``Authorization: Bearer <token>``; probes and metrics stay open.
uvicorn drains in-flight requests on SIGTERM before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from models.features.entities import serving_names
from models.training.registry import working_registry
from services.core.exposition import component_registry
from services.core.settings import Settings, load_settings, scrub_secrets_from_environment
from services.core.signals import load_signals
from services.core.throttled_log import ThrottledLog
from services.scoring.server.guard import BoundedHttpToolsProtocol
from services.scoring.server.metrics import ScoringMetrics
from services.scoring.server.scorer import NotReady, Rejected, Scorer
from services.scoring.wire import MATRIX_TYPE

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Message = dict[str, Any]
ENDPOINTS = {
    "/v1/score": "score",
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
}  # fmt: skip  (any other path: "other")
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
# Small batches are scored on the event loop (no thread hand-off on the latency path); larger
# ones in a worker thread, where ONNX Runtime releases the GIL, so two batches infer in
# parallel and probes are not stuck behind them (measured: 87k vs 60k rows/s at saturation).
INLINE_BODY_BYTES = 64 * 1024  # about 80 named rows, or 420 matrix rows of 39 features
# Answered before its body was read: the connection cannot carry another request after it.
CLOSE = (b"connection", b"close")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class ScoringApp:
    def __init__(self, scorer: Scorer, metrics: ScoringMetrics, registry: CollectorRegistry,
                 token: str | None, max_body: int, reload_interval: float,
                 max_in_flight: int = 64, body_budget: int = 256 << 20) -> None:  # fmt: skip
        self.scorer, self.metrics, self.registry = scorer, metrics, registry
        self._token = f"Bearer {token}".encode() if token else None
        self._max_body, self._interval = max_body, reload_interval
        self._max_in_flight, self._in_flight = max_in_flight, 0
        self._budget, self._buffered = body_budget, 0  # bytes of bodies in flight, at most
        self._watcher: asyncio.Task[None] | None = None
        self._warnings = ThrottledLog(logging.getLogger("fraudstream.scoring"))
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="score")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._reload()
                self._watcher = asyncio.create_task(self._watch())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._watcher:
                    self._watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._watcher
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _reload(self) -> None:
        """Load a new current model in a worker thread; requests keep flowing meanwhile (a
        version that cannot serve is refused and counted there; the serving one stays). A
        registry that cannot be read is counted and tried again: the watcher never stops."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.scorer.reload_if_changed)
        except Exception as error:
            self.metrics.reload_failures.labels("registry_error").inc()
            self.metrics.current_refused.set(1)
            self._warnings.warning("registry", "the model registry cannot be read (%s: %s); "
                                   "still serving the model loaded", type(error).__name__,
                                   error)  # fmt: skip

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._reload()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route, and count every request in the latency histogram by endpoint and status
        code, failures included (499: the client left before an answer)."""
        started, status = time.perf_counter(), 499

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._route(scope, receive, sending)
        finally:
            endpoint = ENDPOINTS.get(scope["path"], "other")
            self.metrics.request_seconds.labels(endpoint, str(status)).observe(
                time.perf_counter() - started
            )

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/v1/score" and method == "POST":
            await self._score(scope, receive, send)
        elif path == "/healthz":
            await _respond(send, 200, _json.encode({"status": "ok"}))
        elif path == "/readyz":
            model = self.scorer.model
            ready = {"ready": model is not None, "model_version": model.version if model else None}
            await _respond(send, 200 if model else 503, _json.encode(ready))
        elif path == "/metrics":
            await _respond(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        else:
            await _respond(send, 404, _json.encode({"error": f"no route {method} {path}"}))

    async def _score(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        if self._token and not secrets.compare_digest(headers.get(b"authorization", b""),
                                                      self._token):  # fmt: skip
            self.metrics.errors.labels("unauthorized").inc()
            await _respond(send, 401, _json.encode({"error": "missing or wrong bearer token"}),
                           extra=[CLOSE])  # fmt: skip
            return
        declared = headers.get(b"content-length", b"")
        # What the body may take: its declared length, or the most a body may be.
        reserve = min(int(declared), self._max_body) if declared.isdigit() else self._max_body
        busy = self._in_flight >= self._max_in_flight
        if busy or self._buffered + reserve > self._budget:  # shed load before reading
            self.metrics.errors.labels("overloaded").inc()
            await _respond(send, 503, _json.encode({"error": "overloaded, retry"}),
                           extra=[(b"retry-after", b"1"), CLOSE])  # fmt: skip
            return
        content_type = headers.get(b"content-type", b"application/json").decode(errors="replace")
        binary = content_type.startswith(("application/msgpack", MATRIX_TYPE))
        self._in_flight += 1
        self._buffered += reserve
        try:
            with self.metrics.in_flight.track_inprogress():
                await self._score_body(headers, content_type, binary, receive, send)
        finally:
            self._in_flight -= 1
            self._buffered -= reserve

    async def _score_body(self, headers: dict[bytes, bytes], content_type: str, binary: bool,
                          receive: Receive, send: Send) -> None:  # fmt: skip
        try:
            body = await self._body(headers, receive)
            if len(body) <= INLINE_BODY_BYTES:
                response = self.scorer.score(body, content_type)
            else:
                response = await asyncio.get_running_loop().run_in_executor(
                    self._workers, self.scorer.score, body, content_type
                )
        except _TooLarge:
            await self._error(
                send, 413, "too_large", f"body over {self._max_body} bytes", close=True
            )
            return
        except _Disconnected:  # the client left (or was closed for being too slow)
            self.metrics.errors.labels("disconnected").inc()
            return
        except Rejected as rejected:
            kind = "invalid" if rejected.status == 422 else "malformed"
            detail = {"row": rejected.row, "field": rejected.field}
            await self._error(send, rejected.status, kind, str(rejected), detail)
            return
        except NotReady:
            await self._error(send, 503, "not_ready", "no model loaded yet")
            return
        encoded = _msgpack.encode(response) if binary else _json.encode(response)
        await _respond(send, 200, encoded, "application/msgpack" if binary else "application/json")

    async def _body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self._max_body:
            raise _TooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _error(self, send: Send, status: int, kind: str, message: str,
                     detail: dict[str, Any] | None = None,
                     close: bool = False) -> None:  # fmt: skip
        self.metrics.errors.labels(kind).inc()
        await _respond(send, status, _json.encode({"error": message, **(detail or {})}),
                       extra=[CLOSE] if close else None)  # fmt: skip


async def _respond(send: Send, status: int, body: bytes, content_type: str = "application/json",
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    headers = [(b"content-type", content_type.encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def from_environment() -> ScoringApp:
    """The app as configured by FRAUDSTREAM_* variables (uvicorn calls this in each worker)."""
    settings = load_settings()
    registry = component_registry()
    metrics = ScoringMetrics(registry)
    registry_dir = working_registry(settings.model.registry, settings.state_dir)
    serving = serving_names(load_signals(settings.model.signals))
    scorer = Scorer(registry_dir, metrics, settings.scoring.threads,
                    settings.scoring.shadow_version, serving, settings.scoring.explain)  # fmt: skip
    s = settings.scoring
    budget = s.body_budget_bytes or body_budget(memory_limit_bytes(), s.workers)
    return ScoringApp(scorer, metrics, registry, s.bearer(), s.max_body_bytes,
                      s.reload_interval_s, s.max_in_flight, budget)  # fmt: skip


CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
                 Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # v1  # fmt: skip
DEFAULT_BODY_BUDGET = 256 << 20  # without a memory limit


def memory_limit_bytes(files: tuple[Path, ...] = CGROUP_LIMITS) -> int | None:
    """The memory limit this process runs under (its container's), if any."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max", or v1's huge "unlimited"
            return int(text)
    return None


def body_budget(limit: int | None, workers: int) -> int:
    """Bytes of request bodies a worker holds at once: a quarter of the memory limit shared by
    the workers (buffers, their decoded rows and the scores stay within it), or 256 MiB."""
    return DEFAULT_BODY_BUDGET if limit is None else max(limit // 4 // workers, 1 << 20)


def serve(settings: Settings, port: int) -> None:
    """Run the service in the foreground until SIGTERM/SIGINT (in-flight requests drain)."""
    import uvicorn

    scrub_secrets_from_environment()  # uvicorn's workers read secrets from the secrets dir
    os.environ.update(settings.to_environment())  # each worker process builds the same app
    uvicorn.run(
        "services.scoring.server.app:from_environment", factory=True, host=settings.scoring.host,
        port=port, workers=settings.scoring.workers, http=BoundedHttpToolsProtocol, loop="uvloop",
        log_level="warning", access_log=False, timeout_graceful_shutdown=30,
    )  # fmt: skip
