"""The scoring service as a real process: scores, validation, reload under load, shadow,
auth, graceful drain on SIGTERM, and the client's circuit breaker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest
import urllib3

from models.errors import PromotionRefused
from models.features import offline
from models.features.definitions import FEATURE_NAMES
from models.features.entities import serving_names
from models.training.calibration import calibrate
from models.training.datasets import frame_from_transactions
from models.training.registry import DEFAULT_REGISTRY, Registry
from models.training.trainer import scores_for
from services.core.signals import to_yaml
from services.devstack import processes
from services.devstack.processes import wait_until
from services.generator import GeneratorConfig, generate
from services.generator.signals import generated_signals
from services.scoring.client import CircuitOpen, ScoringClient, ScoringUnavailable
from services.scoring.server import model as scoring_model
from services.scoring.wire import MATRIX_TYPE
from tests.environment import without_settings
from tests.signals_model import publish, trained_signals_model

pytestmark = pytest.mark.integration
http = urllib3.PoolManager(retries=False, timeout=30)


@dataclass
class Service:
    url: str
    port: int
    registry: Path
    record: processes.ProcessRecord

    def post(self, body: bytes, **headers: str) -> urllib3.BaseHTTPResponse:
        return http.request("POST", f"{self.url}/v1/score", body=body, headers=headers)

    def metrics(self) -> str:
        return http.request("GET", f"{self.url}/metrics").data.decode()


Start = Callable[..., Service]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Start]:
    """Start `fraudstream serve` on a free port over a copy of the shipped registry."""
    started: list[Service] = []
    registry = tmp_path / "registry"
    shutil.copytree(DEFAULT_REGISTRY, registry)

    def start(*args: str, port: int | None = None, **env: str) -> Service:
        chosen = port or processes.free_loopback_port()
        argv = [sys.executable, "-m", "services.cli", "serve", "--port", str(chosen),
                "--registry", str(registry), *args]  # fmt: skip
        environ = without_settings()
        environ |= {"FRAUDSTREAM_SCORING_RELOAD_INTERVAL_S": "0.1", **env}
        record = processes.spawn("scoring", argv, tmp_path / f"scoring-{chosen}.log", environ)
        service = Service(f"http://127.0.0.1:{chosen}", chosen, registry, record)
        started.append(service)
        processes.wait_until(
            lambda: http.request("GET", f"{service.url}/readyz").status == 200, 60, "scoring"
        )
        return service

    yield start
    for service in started:
        processes.stop(service.record)


@pytest.fixture(scope="module")
def feature_rows() -> list[dict[str, float]]:
    items = list(generate(GeneratorConfig(seed=8, customers=300, fraud_rate=0.05), 3_000))
    frame = offline.compute(frame_from_transactions([i.transaction for i in items]))
    return [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in frame.to_numpy()]


def _body(rows: Sequence[Mapping[str, float | None]], **more: str) -> bytes:
    return msgspec.json.encode({"rows": rows, **more})


def test_scores_equal_in_process_onnxruntime(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service()
    # A client asking to explain every row is not obeyed (on cdc8e54 it was: a free oracle).
    reply = json.loads(service.post(_body(feature_rows, explain="all")).data)
    local = scoring_model.load(DEFAULT_REGISTRY / "versions" / "v0001")
    matrix = np.array([[r[n] for n in FEATURE_NAMES] for r in feature_rows], dtype=np.float32)
    expected = local.score(matrix)
    got = np.array([r["score"] for r in reply["results"]])
    assert reply["model_version"] == "v0001"
    assert np.abs(got - expected).max() <= 1e-7
    flagged = [r for r in reply["results"] if r["score"] >= reply["review_threshold"]]
    assert flagged
    assert all(r["reasons"] and set(r["reasons"]) <= set(FEATURE_NAMES) for r in flagged)
    assert all(not r["reasons"] for r in reply["results"] if r not in flagged)


def test_validation_errors_name_row_and_field(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service("--shadow", "v0001")
    good = feature_rows[0]
    missing = {k: v for k, v in good.items() if k != "amount_usd"}
    cases = [
        (_body([good, missing]), 422, 1, "amount_usd"),
        (_body([good, good, {**good, "surprise": 1.0}]), 422, 2, "surprise"),
        (_body([{**good, "count_1m": "many"}]), 422, 0, "count_1m"),  # type: ignore[dict-item]
        (_body([]), 422, None, "rows"),
        (b"{not json", 400, None, None),
    ]
    for body, status, row, field in cases:
        reply = service.post(body)
        detail = json.loads(reply.data)
        assert (reply.status, detail.get("row"), detail.get("field")) == (status, row, field)
    nan_row = msgspec.msgpack.encode(
        {"rows": [good, {**good, "speed_from_prev_kmh": float("nan")}]}
    )
    reply = service.post(nan_row, **{"content-type": "application/msgpack"})
    assert reply.status == 422
    assert json.loads(reply.data)["field"] == "speed_from_prev_kmh"
    oversized = service.post(b"[" + b"0," * (5 * 1024 * 1024) + b"0]")
    assert oversized.status == 413
    ok = msgspec.msgpack.decode(
        service.post(
            msgspec.msgpack.encode({"rows": [good]}), **{"content-type": "application/msgpack"}
        ).data
    )
    assert ok["shadow"]["model_version"] == "v0001"
    assert ok["shadow"]["scores"] == [ok["results"][0]["score"]]  # reported, same model here
    text = service.metrics()
    for name in ('fraudstream_scoring_request_seconds_bucket{code="200",endpoint="score"',
                 'fraudstream_scoring_request_seconds_count{code="413",endpoint="score"} 1.0',
                 "fraudstream_scoring_batch_rows_bucket", 'role="shadow"',
                 'fraudstream_scoring_errors_total{type="invalid"} 5.0',
                 'fraudstream_scoring_errors_total{type="too_large"} 1.0',
                 'fraudstream_scoring_model_load_seconds{model_version="v0001"}'):  # fmt: skip
        assert name in text, name


def test_reload_under_load_drops_nothing(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service()
    registry = Registry(service.registry)
    client = ScoringClient(service.url, deadline_s=5.0, retries=0)
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                seen.append(client.score(feature_rows[:64]).model_version)
            except Exception as error:
                failures.append(repr(error))

    sender = threading.Thread(target=load)
    sender.start()
    try:
        processes.wait_until(lambda: len(seen) > 50, 30, "traffic before the promotion")
        v1 = service.registry / "versions" / "v0001"
        files = {p.name: p.read_bytes() for p in v1.iterdir() if p.name != "metadata.json"}
        meta = json.loads((v1 / "metadata.json").read_text())
        new = registry.publish(files, meta)
        registry.promote(new)
        processes.wait_until(lambda: seen[-1] == new, 30, "responses from the new version")
        processes.wait_until(lambda: seen.count(new) > 50, 30, "traffic after the promotion")
    finally:
        stop.set()
        sender.join()
    assert failures == []
    switch = seen.index(new)
    assert set(seen[:switch]) == {"v0001"}
    assert set(seen[switch:]) == {new}  # once swapped, never back
    assert "fraudstream_scoring_reloads_total 1.0" in service.metrics()


def test_probability_comes_with_the_version_serving(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    """v0001 predates calibration: its probability is its score. A calibrated version
    promoted while the service runs is served with its calibration, over msgpack too."""
    service = start_service()
    before = json.loads(service.post(_body(feature_rows)).data)["results"]
    assert [r["probability"] for r in before] == [r["score"] for r in before]
    registry = Registry(service.registry)
    v1 = service.registry / "versions" / "v0001"
    files = {p.name: p.read_bytes() for p in v1.iterdir() if p.name != "metadata.json"}
    calibration = {"method": "isotonic", "scores": [0.0, 0.5, 1.0],
                   "probabilities": [0.0, 0.1, 1.0]}  # fmt: skip
    new = registry.publish(files, {**registry.metadata("v0001"), "calibration": calibration})
    registry.promote(new)
    client = ScoringClient(service.url, deadline_s=5.0, retries=0)
    processes.wait_until(lambda: client.score(feature_rows[:1]).model_version == new, 30,
                         "the calibrated version")  # fmt: skip
    after = client.score(feature_rows).results
    scores = np.array([r.score for r in after])
    assert scores.tolist() == [r["score"] for r in before]
    assert np.array_equal([r.probability for r in after], calibrate(scores, calibration))


def _permuted_version(registry: Registry, seed: int = 3) -> tuple[str, list[str]]:
    """A version of v0001 that takes its features in another order: a Gather in front of the
    same ONNX graph, metadata naming the new order. Same scores as v0001 for the same rows."""
    import onnx
    from onnx import helper, numpy_helper

    names = list(FEATURE_NAMES)
    order = np.random.default_rng(seed).permutation(len(names))
    permuted = [names[i] for i in order]
    v1 = registry.root / "versions" / "v0001"
    model = onnx.load(v1 / "model.onnx")
    for node in model.graph.node:
        node.input[:] = ["original" if x == "features" else x for x in node.input]
    back = np.argsort(order).astype(np.int64)  # column j of the original = column back[j]
    model.graph.initializer.append(numpy_helper.from_array(back, "back"))
    model.graph.node.insert(0, helper.make_node("Gather", ["features", "back"], ["original"],
                                                axis=1))  # fmt: skip
    files = {p.name: p.read_bytes() for p in v1.iterdir() if p.name != "metadata.json"}
    files["model.onnx"] = model.SerializeToString()
    meta = json.loads((v1 / "metadata.json").read_text()) | {"feature_names": permuted}
    return registry.publish(files, meta), permuted


def test_an_incompatible_model_is_refused_and_the_serving_one_stays(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    """On cdc8e54 a version whose inputs differ went live (promote --force, or CURRENT written
    by hand) and every request of the job got a 422 from then on."""
    service = start_service()
    registry = Registry(service.registry)
    other, _ = _permuted_version(registry)
    with pytest.raises(PromotionRefused, match="inputs differ from the serving feature list"):
        registry.promote(other, force=True)
    (service.registry / "CURRENT").write_text(other + "\n")  # as a hand edit would
    failures = 'fraudstream_scoring_reload_failures_total{reason="incompatible_inputs"} 1.0'
    processes.wait_until(lambda: failures in service.metrics(), 30, "the refusal counted")
    assert "fraudstream_scoring_current_refused 1.0" in service.metrics()  # alerts on it
    reply = service.post(_body(feature_rows[:3]))
    assert (reply.status, json.loads(reply.data)["model_version"]) == (200, "v0001")
    time.sleep(0.5)  # several reload intervals: refused once, not again and again
    assert failures in service.metrics()


def test_the_shadow_is_scored_with_its_own_columns(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    """A shadow that takes the same features in another order scores like the primary (on
    cdc8e54 it was fed the primary's column order)."""
    registry = Registry(DEFAULT_REGISTRY)
    copy = Registry(start_service().registry)
    shadow, _ = _permuted_version(copy)
    service = start_service("--shadow", shadow)
    reply = json.loads(service.post(_body(feature_rows[:200])).data)
    primary = np.array([r["score"] for r in reply["results"]])
    assert reply["shadow"]["model_version"] == shadow
    assert np.abs(np.array(reply["shadow"]["scores"]) - primary).max() <= 1e-6
    assert registry.current() == "v0001"


def test_bearer_token_is_required_when_configured(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service(FRAUDSTREAM_SCORING_TOKEN="s3cret")
    body = _body(feature_rows[:2])
    assert service.post(body).status == 401
    assert service.post(body, authorization="Bearer wrong").status == 401
    assert service.post(body, authorization="Bearer s3cret").status == 200
    assert http.request("GET", f"{service.url}/healthz").status == 200  # probes stay open
    open_service = start_service()
    assert open_service.post(body).status == 200


def test_sigterm_drains_in_flight_requests(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service(FRAUDSTREAM_SCORING_EXPLAIN="all")
    big = _body(feature_rows * 2)  # about a second of work, off the event loop
    replies: list[urllib3.BaseHTTPResponse] = []
    sender = threading.Thread(target=lambda: replies.append(service.post(big)))
    sender.start()
    processes.wait_until(
        lambda: "fraudstream_scoring_in_flight 1.0" in service.metrics(), 30, "request in flight"
    )
    os.kill(service.record.pid, signal.SIGTERM)
    sender.join(timeout=60)
    assert replies[0].status == 200
    assert len(json.loads(replies[0].data)["results"]) == 2 * len(feature_rows)
    processes.wait_until(lambda: not processes.is_running(service.record), 30, "exit")


def test_breaker_opens_while_down_and_closes_when_back(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service()
    client = ScoringClient(service.url, deadline_s=0.5, retries=1, failures_to_open=3,
                           cooldown_s=0.3)  # fmt: skip
    assert client.score(feature_rows[:1]).model_version == "v0001"
    processes.stop(service.record)
    for _ in range(3):
        with pytest.raises(ScoringUnavailable):
            client.score(feature_rows[:1])
    assert client.breaker.state == "open"
    with pytest.raises(CircuitOpen):
        client.score(feature_rows[:1])  # fails fast: no connection attempted
    start_service(port=service.port)

    def recovered() -> bool:
        try:
            return client.score(feature_rows[:1]).model_version == "v0001"
        except ScoringUnavailable:
            return False

    processes.wait_until(recovered, 30, "breaker closing")
    state: str = client.breaker.state  # read again: the service came back meanwhile
    assert state == "closed"


def test_readyz_waits_for_a_model(start_service: Start, tmp_path: Path) -> None:
    empty = tmp_path / "empty-registry"
    empty.mkdir()
    port = processes.free_loopback_port()
    argv = [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
            "--registry", str(empty)]  # fmt: skip
    env = without_settings()
    record = processes.spawn("scoring", argv, tmp_path / "empty.log",
                             env | {"FRAUDSTREAM_SCORING_RELOAD_INTERVAL_S": "0.1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(lambda: http.request("GET", f"{url}/healthz").status == 200, 60, "up")
        assert http.request("GET", f"{url}/readyz").status == 503
        assert http.request("POST", f"{url}/v1/score", body=b'{"rows":[]}').status == 503
        shutil.copytree(DEFAULT_REGISTRY, empty, dirs_exist_ok=True)
        processes.wait_until(lambda: http.request("GET", f"{url}/readyz").status == 200, 30,
                             "ready once a model is promoted")  # fmt: skip
    finally:
        processes.stop(record)


def _slow_client(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(payload)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or a reset); waits up to its timeout."""
    try:
        while chunk := sock.recv(65536):
            if b"HTTP/1.1" in chunk and b"\r\n\r\n" in chunk:
                continue  # a response before the close is fine
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.timeout(120)
def test_slow_and_oversized_clients_are_dropped_while_others_are_served(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service(FRAUDSTREAM_SCORING_HEADER_TIMEOUT_S="1.0",
                            FRAUDSTREAM_SCORING_BODY_TIMEOUT_S="1.0")  # fmt: skip
    partial_head = b"POST /v1/score HTTP/1.1\r\nhost: x\r\n"
    partial_body = partial_head + b"content-length: 5000\r\n\r\n" + b'{"rows": ['
    slow = [_slow_client(service.port, partial_head) for _ in range(50)]
    slow += [_slow_client(service.port, partial_body) for _ in range(50)]
    body = _body(feature_rows[:1])
    latencies = []
    for _ in range(100):  # meanwhile, normal requests keep their latency
        started = time.perf_counter()
        assert service.post(body).status == 200
        latencies.append(time.perf_counter() - started)
    assert sorted(latencies)[98] < 0.5, latencies
    for sock in slow:
        sock.settimeout(5.0)  # the server's limits are 1 s: 5 s is ample
    assert all(_closed_by_server(sock) for sock in slow)
    for sock in slow:
        sock.close()

    huge = _slow_client(service.port, partial_head + b"x-pad: " + b"a" * 100_000 + b"\r\n\r\n")
    huge.settimeout(5.0)
    assert huge.recv(200).startswith(b"HTTP/1.1 431")
    huge.close()
    control = _slow_client(service.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    control.settimeout(5.0)
    assert control.recv(200).startswith(b"HTTP/1.1 200")  # the negative control: served
    control.close()


@pytest.mark.timeout(120)
def test_requests_beyond_the_concurrency_limit_get_503_with_retry_after(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service(FRAUDSTREAM_SCORING_MAX_IN_FLIGHT="1",
                            FRAUDSTREAM_SCORING_BODY_TIMEOUT_S="3.0")  # fmt: skip
    holder = _slow_client(
        service.port, b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n{"
    )  # in flight, reading its body
    deadline = time.monotonic() + 10
    while (reply := service.post(_body(feature_rows[:1]))).status != 503:
        assert time.monotonic() < deadline, "the held request never counted as in flight"
        time.sleep(0.05)
    assert reply.headers["retry-after"] == "1"
    holder.close()
    processes.wait_until(lambda: service.post(_body(feature_rows[:1])).status == 200, 10,
                         "served again once the slot is free")  # fmt: skip


def test_request_bodies_beyond_the_memory_budget_get_503(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    """64 in flight x 8 MiB bodies was 512 MiB against a 1 GiB pod: bodies now share a budget
    (by default a quarter of the memory limit)."""
    service = start_service(FRAUDSTREAM_SCORING_BODY_BUDGET_BYTES=str(1 << 20),
                            FRAUDSTREAM_SCORING_BODY_TIMEOUT_S="5.0")  # fmt: skip
    holder = _slow_client(
        service.port, b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-length: 900000\r\n\r\n{"
    )  # 900 kB reserved, its body never coming
    processes.wait_until(lambda: "fraudstream_scoring_in_flight 1.0" in service.metrics(), 10,
                         "the held request in flight")  # fmt: skip
    big = _body(feature_rows[:1]) + b" " * 200_000  # would pass the budget on its own
    reply = service.post(big)
    assert (reply.status, reply.headers["retry-after"]) == (503, "1")
    assert service.post(_body(feature_rows[:1])).status == 200  # a small one fits beside it
    holder.close()
    processes.wait_until(lambda: service.post(big).status == 200, 10, "room again")


def test_a_service_that_requires_a_token_refuses_to_serve_without_one(tmp_path: Path) -> None:
    """The chart requires one: an existing Secret without scoring_token must not leave the
    scoring API open (a free score-and-reasons oracle)."""
    environ = without_settings()
    environ |= {"FRAUDSTREAM_SCORING_REQUIRE_TOKEN": "true", "FRAUDSTREAM_STATE_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "services.cli", "serve", "--port", "0"]
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: FRAUDSTREAM_SCORING_REQUIRE_TOKEN: no FRAUDSTREAM_SCORING_TOKEN (or "
        "scoring_token in the secrets directory): refusing to serve open"
    ]


def test_a_model_of_declared_signals_is_served_with_missing_values_where_declared(
    start_service: Start, tmp_path: Path
) -> None:
    """A model trained with a signals file: served where the same file is set, refused
    where it is not; a missing declared signal is null (NaN), a missing built-in a 422."""
    signals, names = generated_signals(), serving_names(generated_signals())
    trained, frame = trained_signals_model()
    service = start_service()  # no signals file set: the shipped model serves
    publish(trained, service.registry)
    wait_until(lambda: "fraudstream_scoring_current_refused 1.0" in service.metrics(), 10,
               "the refusal")  # fmt: skip
    signals_file = tmp_path / "signals.yaml"
    signals_file.write_text(to_yaml(signals))
    served = start_service(FRAUDSTREAM_MODEL_SIGNALS=str(signals_file))
    x = offline.compute(frame, signals).to_numpy(np.float32)[:50]
    rows = [{n: (None if np.isnan(v) else float(v)) for n, v in zip(names, r, strict=True)}
            for r in x]  # fmt: skip
    assert any(v is None for r in rows for v in r.values())  # missing signals among them
    reply = served.post(_body(rows), **{"content-type": "application/json"})
    assert reply.status == 200, reply.data
    scores = [r["score"] for r in msgspec.json.decode(reply.data)["results"]]
    assert np.allclose(scores, scores_for(x, trained.onnx), atol=1e-6)
    rows[0]["amount_usd"] = None
    refused = served.post(_body(rows), **{"content-type": "application/json"})
    assert refused.status == 422
    assert b"amount_usd" in refused.data


def test_without_a_fixed_shadow_the_service_follows_the_registrys(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    service = start_service()
    registry = Registry(service.registry)
    body = _body(feature_rows[:2])

    def shadow() -> str | None:
        reply = json.loads(service.post(body).data)
        return reply["shadow"]["model_version"] if "shadow" in reply else None

    assert shadow() is None
    registry.set_shadow("v0001")
    processes.wait_until(lambda: shadow() == "v0001", 20, "the shadow followed", interval=0.1)
    garbage = (b"v0099\n", b"../../../tmp\n", b"\xff\xfe\x00")  # missing, outside, binary
    for refused, content in enumerate(garbage, start=1):
        (service.registry / "SHADOW").write_bytes(content)
        count = f'reason="shadow_refused"}} {refused:.1f}'
        processes.wait_until(lambda count=count: count in service.metrics(), 20,  # type: ignore[misc]
                             f"SHADOW {content!r} refused", interval=0.1)  # fmt: skip
        assert shadow() is None  # the primary goes on scoring alone
    copy = service.registry / "versions" / "v0002"  # CURRENT is still followed meanwhile
    shutil.copytree(service.registry / "versions" / "v0001", copy)
    meta = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps(meta | {"version": "v0002"}))
    registry.promote("v0002", force=True)

    def serving() -> str:
        return str(json.loads(service.post(body).data)["model_version"])

    processes.wait_until(lambda: serving() == "v0002", 20, "CURRENT followed", interval=0.1)
    registry.set_shadow("v0001")
    processes.wait_until(lambda: shadow() == "v0001", 20, "the shadow back", interval=0.1)


def test_a_matrix_request_scores_as_named_rows_do_and_bad_ones_are_refused(
    start_service: Start, feature_rows: list[dict[str, float]]
) -> None:
    """The stream job's request: one float32 matrix, the names once. The same scores and
    reasons as named rows; a matrix that is not the model's columns, or not whole rows, or
    holds NaN in a built-in feature, is refused naming what is wrong."""
    service = start_service()
    names = list(FEATURE_NAMES)
    matrix = np.array([[r[n] for n in names] for r in feature_rows[:500]], dtype=np.float32)
    client = ScoringClient(service.url, deadline_s=10)
    by_matrix = client.score_matrix(names, matrix)
    by_name = client.score(feature_rows[:500])
    assert by_matrix == by_name
    assert any(r.reasons for r in by_matrix.results)  # flagged rows explained the same

    def post(features: object, data: object, **more: object) -> tuple[int, dict[str, object]]:
        body = msgspec.msgpack.encode({"features": features, "matrix": data, **more})
        reply = service.post(body, **{"content-type": MATRIX_TYPE})
        return reply.status, msgspec.json.decode(reply.data)

    swapped = [names[1], names[0], *names[2:]]
    nan_built_in, infinite = matrix[:2].copy(), matrix[:2].copy()
    nan_built_in[1, names.index("amount_usd")] = np.nan
    infinite[0, names.index("count_1h")] = np.inf
    cases: list[tuple[object, object, dict[str, object], int, str | None]] = [
        (swapped, matrix.tobytes(), {}, 422, "features"),
        (names[:-1], matrix[:, :-1].tobytes(), {}, 422, "features"),
        ([*names, "surprise"], matrix.tobytes(), {}, 422, "features"),
        (["x" * 200], matrix.tobytes(), {}, 422, None),  # a name no model has: too long
        (names, matrix.tobytes()[:-3], {}, 422, "matrix"),
        (names, b"", {}, 422, "matrix"),
        (names, nan_built_in.tobytes(), {}, 422, "amount_usd"),
        (names, infinite.tobytes(), {}, 422, "count_1h"),
        (names, "not bytes", {}, 422, None),
        (names, matrix[:1].tobytes(), {"explain": "all"}, 422, None),
    ]
    for features, data, more, status, field in cases:
        got, detail = post(features, data, **more)
        assert (got, detail.get("field")) == (status, field), detail
    garbage = service.post(b"\xc1not msgpack", **{"content-type": MATRIX_TYPE})
    assert garbage.status == 400
