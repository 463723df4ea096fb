"""The job's scorer against a service from before the matrix request: it falls back to
named rows, once, and scores (a real local HTTP server playing the old service)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from services.scoring.client import ScoringClient, ScoringRejected
from services.scoring.wire import MATRIX_TYPE, RowResult, ScoreResponse
from stream_jobs.scorers import ServiceScorer

NAMES = ("amount_usd", "count_1h")


class _OldService(BaseHTTPRequestHandler):
    """Named rows in msgpack only; anything else is a 400, as before the matrix; a row
    naming other features is a 422."""

    seen: list[str] = []  # noqa: RUF012 (the test's record of content types)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        kind = self.headers["content-type"]
        self.seen.append(kind)
        if kind != "application/msgpack":
            self._reply(400, b'{"error": "malformed body"}')
            return
        rows = msgspec.msgpack.decode(body)["rows"]
        if any(set(row) != set(NAMES) for row in rows):
            self._reply(422, b'{"error": "unknown field"}')
            return
        results = [RowResult(0.01 * row["amount_usd"], []) for row in rows]
        self._reply(200, msgspec.msgpack.encode(ScoreResponse("v0001", results, 0.5, 0.9)))

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def old_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _OldService.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_old_service_gets_named_rows_after_its_first_refusal(old_service: str) -> None:
    scorer = ServiceScorer(ScoringClient(old_service, deadline_s=5), NAMES)
    first = scorer.score([[10.0, 1.0], [20.0, 2.0]])
    second = scorer.score([[30.0, 3.0]])
    assert [r.score for r in first.results] == [0.1, 0.2]
    assert [r.score for r in second.results] == [pytest.approx(0.3)]
    # one matrix refused, then named rows only
    assert _OldService.seen == [MATRIX_TYPE, "application/msgpack", "application/msgpack"]


def test_a_refusal_of_the_rows_themselves_is_not_hidden(old_service: str) -> None:
    scorer = ServiceScorer(ScoringClient(old_service, deadline_s=5), ("amount_usd", "other"))
    with pytest.raises(ScoringRejected) as refused:
        scorer.score([[10.0, 1.0]])
    assert refused.value.status == 422
