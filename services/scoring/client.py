"""The scoring client the stream job uses: pooled connections, a deadline per call, bounded
retries with jittered backoff, and a circuit breaker that fails fast while the service is down.

The breaker opens after ``failures_to_open`` consecutive failed calls (a refusal, 4xx, counts:
it is not retried, but a service that refuses every batch serves nothing); while open, calls raise
:class:`CircuitOpen` at once (the caller falls back to rules); after ``cooldown_s`` one trial
call goes through (half-open), and its success closes the breaker again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import numpy.typing as npt
import urllib3

from services.scoring.wire import MATRIX_TYPE, ScoreResponse, matrix_body

# msgpack: measured faster than JSON for batches in benchmarks/scoring.py.
_decode = msgspec.msgpack.Decoder(ScoreResponse).decode
_encode = msgspec.msgpack.Encoder().encode
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class ScoringUnavailable(RuntimeError):
    """The service did not answer in time or failed; the caller should fall back."""


class CircuitOpen(ScoringUnavailable):
    """The breaker is open: no call was attempted."""


class ScoringRejected(RuntimeError):
    """The service refused the request itself (4xx): retrying would not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class CircuitBreaker:
    def __init__(self, failures_to_open: int, cooldown_s: float) -> None:
        self._threshold, self._cooldown = failures_to_open, cooldown_s
        self._failures, self._opened_at = 0, 0.0
        self._lock = threading.Lock()

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        with self._lock:
            if self._failures < self._threshold:
                return "closed"
            return "half_open" if time.monotonic() - self._opened_at >= self._cooldown else "open"

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open, one trial per cooldown)."""
        with self._lock:
            if self._failures < self._threshold:
                return True
            if time.monotonic() - self._opened_at >= self._cooldown:
                self._opened_at = time.monotonic()  # the next trial waits another cooldown
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self._threshold:
                self._opened_at = time.monotonic()


class ScoringClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        deadline_s: float = 0.25,
        retries: int = 2,
        backoff_s: float = 0.01,
        failures_to_open: int = 5,
        cooldown_s: float = 2.0,
        pool_size: int = 4,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"scoring URL must be http(s)://host:port, got {base_url!r}")
        self._pool = urllib3.connection_from_url(base_url, maxsize=pool_size, block=False)
        self._path = parts.path.rstrip("/") + "/v1/score"
        auth = {"authorization": f"Bearer {token}"} if token else {}
        self._named = {"content-type": "application/msgpack", **auth}
        self._matrix = {"content-type": MATRIX_TYPE, **auth}
        self._deadline, self._retries, self._backoff = deadline_s, retries, backoff_s
        self.breaker = CircuitBreaker(failures_to_open, cooldown_s)

    def score(self, rows: Sequence[dict[str, float]]) -> ScoreResponse:
        """Scores for named ``rows`` within the deadline, or ScoringUnavailable / CircuitOpen."""
        return self._call(_encode({"rows": rows}), self._named)

    def score_matrix(self, names: Sequence[str], rows: npt.NDArray[Any]) -> ScoreResponse:
        """The same for a matrix whose columns are ``names``: no name repeated per row."""
        return self._call(matrix_body(names, rows), self._matrix)

    def _call(self, body: bytes, headers: dict[str, str]) -> ScoreResponse:
        if not self.breaker.allow():
            raise CircuitOpen("scoring circuit open: falling back without calling")
        deadline = time.monotonic() + self._deadline
        last = "no attempt"
        for attempt in range(self._retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                reply = self._pool.urlopen(
                    "POST", self._path, body=body, headers=headers, retries=False,
                    timeout=urllib3.Timeout(total=remaining), preload_content=True,
                )  # fmt: skip
            except urllib3.exceptions.HTTPError as error:
                last = type(error).__name__
            else:
                if reply.status == 200:
                    self.breaker.success()
                    return _decode(reply.data)
                if reply.status not in _RETRYABLE:  # not retried; but a service refusing
                    self.breaker.failure()  # every batch (a model of other inputs) is down
                    raise ScoringRejected(reply.status, repr(reply.data[:300]))
                last = f"HTTP {reply.status}"
            pause = self._backoff * (2**attempt) * random.uniform(0.5, 1.5)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        self.breaker.failure()
        raise ScoringUnavailable(f"scoring failed within {self._deadline:.3f} s: {last}")

    def close(self) -> None:
        self._pool.close()
