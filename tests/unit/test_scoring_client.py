"""The scoring client's retries, deadline and circuit breaker against a real local HTTP server
that answers as scripted (no scoring model needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from services.scoring.client import CircuitOpen, ScoringClient, ScoringRejected, ScoringUnavailable
from services.scoring.wire import RowResult, ScoreResponse

OK = msgspec.msgpack.encode(ScoreResponse("v7", [RowResult(0.25, [])], 0.5, 0.9))


class Script:
    """The statuses the server answers with, in order (then 200); the requests it saw."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.calls = 0
        self.delay_s = 0.0


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            script.calls += 1
            time.sleep(script.delay_s)
            status = script.statuses.pop(0) if script.statuses else 200
            body = OK if status == 200 else b"{}"
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


ROW = [{"amount_usd": 1.0}]


def test_a_retryable_failure_is_retried_then_succeeds(server: tuple[str, Script]) -> None:
    url, script = server
    script.statuses = [503, 500]
    reply = ScoringClient(url, deadline_s=2.0, retries=2).score(ROW)
    assert reply.model_version == "v7"
    assert script.calls == 3


def test_a_rejection_is_not_retried_and_opens_the_breaker(server: tuple[str, Script]) -> None:
    """A service that refuses every batch (an incompatible model) is as good as down: the
    breaker opens, so batches stop paying the call (on cdc8e54 a 4xx counted as a success)."""
    url, script = server
    script.statuses = [422] * 10
    client = ScoringClient(url, deadline_s=2.0, retries=2, failures_to_open=2)
    for _ in range(2):
        with pytest.raises(ScoringRejected, match="422"):
            client.score(ROW)
    assert script.calls == 2  # not retried
    assert str(client.breaker.state) == "open"
    with pytest.raises(CircuitOpen):
        client.score(ROW)
    assert script.calls == 2


def test_the_breaker_opens_fails_fast_and_closes_after_a_good_trial(
    server: tuple[str, Script],
) -> None:
    url, script = server
    script.statuses = [503] * 4
    client = ScoringClient(url, deadline_s=2.0, retries=1, failures_to_open=2, cooldown_s=0.3)
    for _ in range(2):
        with pytest.raises(ScoringUnavailable):
            client.score(ROW)
    assert client.breaker.state == "open"
    calls = script.calls
    with pytest.raises(CircuitOpen):
        client.score(ROW)
    assert script.calls == calls  # nothing was sent while open
    deadline = time.monotonic() + 5
    while str(client.breaker.state) != "half_open":
        assert time.monotonic() < deadline, "the breaker never went half-open"
        time.sleep(0.05)
    assert client.score(ROW).model_version == "v7"  # the trial call closes it
    assert str(client.breaker.state) == "closed"


def test_a_slow_service_fails_within_the_deadline(server: tuple[str, Script]) -> None:
    url, script = server
    script.delay_s = 1.0
    client = ScoringClient(url, deadline_s=0.2, retries=3)
    started = time.monotonic()
    with pytest.raises(ScoringUnavailable):
        client.score(ROW)
    assert time.monotonic() - started < 0.9
