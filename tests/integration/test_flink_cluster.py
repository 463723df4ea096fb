"""The unchanged job submitted to a standalone Flink cluster (one JobManager and two
TaskManagers from the apache-flink wheel's scripts) at parallelism 2 decides exactly as the
job in local mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from services.core import kafka
from services.core.settings import Settings
from services.devstack import flink_cluster, processes, stack
from tests.integration.streaming import DecisionTail, produce, running_stack

pytestmark = pytest.mark.integration
COUNT = 3_000

Outcome = tuple[str, float, tuple[str, ...], str, tuple[str, ...]]


def _decisions(settings: Settings, what: str) -> dict[str, Outcome]:
    tail = DecisionTail(settings)
    try:
        decisions = tail.wait_for(COUNT, 300, what)
    finally:
        tail.close()
    return {d.transaction_id: (d.decision, d.score, tuple(d.reasons), d.model_version,
                               tuple(d.degraded)) for d in decisions}  # fmt: skip


def _submit(settings: Settings, cluster: flink_cluster.Cluster) -> str:
    """``fraudstream job submit`` as a user runs it; the job id it prints."""
    argv = [sys.executable, "-m", "services.cli", "job", "submit",
            "--jobmanager", cluster.jobmanager, "--parallelism", "2"]  # fmt: skip
    env = settings.child_environment()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(600)  # two job runs, the submit's own 240 s among them
def test_cluster_run_decides_like_the_local_run(tmp_path: Path) -> None:
    with running_stack(tmp_path / "state") as base:
        # A generous scoring deadline: three JVMs share two cores here, and a degraded
        # (rules-only) decision would differ for load, not for the job.
        settings = base.updated({"job_scoring_deadline_ms": 5_000})
        produce(settings, COUNT, 0, 41, "2026-03-01T00:00:00Z")
        job = stack.start_job(settings, tmp_path / "logs")
        try:
            local = _decisions(settings, "local run")
        finally:
            processes.stop(job)

        # The cluster run: same input, empty feature state again, its own group and outputs.
        redis.Redis.from_url(settings.redis.require_url()).flushdb()
        remote = settings.updated({
            "topic_decisions": "cluster.decisions", "topic_alerts": "cluster.alerts",
            "topic_dlq": "cluster.dlq", "job_group_id": "fraudstream-cluster",
        })  # fmt: skip
        kafka.create_topics(remote)
        cluster = flink_cluster.start(tmp_path / "flink", taskmanagers=2)
        try:
            job_id = _submit(remote, cluster)
            vertices = flink_cluster.rest(cluster, f"/jobs/{job_id}")["vertices"]
            on_cluster = _decisions(remote, "cluster run")
            busy = flink_cluster.rest(cluster, "/overview")
        finally:
            flink_cluster.stop(cluster)

    assert {v["parallelism"] for v in vertices} == {2}
    assert busy["taskmanagers"] == 2
    assert busy["slots-available"] == 0  # a subtask on each TaskManager
    assert len(local) == COUNT
    assert all(not outcome[4] for outcome in local.values()), "a degraded local decision"
    assert on_cluster == local
