"""The chart against a real Kubernetes API server: every toggle passes a server-side dry run
(the server's own validation and defaulting, the CRDs applied for real), a long release name
still makes names the server accepts, and the accounts can do what the pods need and no more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.apiserver import Cluster, api_server
from tests.deploy.chart import NAMESPACE, SCHEMAS, TOGGLES, documents, template


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with api_server(tmp_path_factory.mktemp("kube")) as running:
        crds = [
            *SCHEMAS.glob("flink-kubernetes-operator/*.yml"),
            *SCHEMAS.glob("prometheus-operator/*.yaml"),
        ]
        for crd in crds:
            running.ok("apply", "--server-side", "-f", str(crd))
        running.ok("wait", "--for", "condition=established", "--timeout", "60s", "crd", "--all")
        running.ok("create", "namespace", NAMESPACE)
        yield running


def dry_run(cluster: Cluster, text: str) -> Any:
    return cluster.kubectl("apply", "--dry-run=server", "-n", NAMESPACE, "-f", "-", stdin=text)


@pytest.mark.parametrize("values", TOGGLES.values(), ids=TOGGLES.keys())
def test_the_api_server_accepts_every_toggle(cluster: Cluster, values: dict[str, Any]) -> None:
    done = dry_run(cluster, template(values))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(documents(template(values)))


def test_a_release_name_of_53_characters_makes_names_the_server_accepts(cluster: Cluster) -> None:
    """helm allows 53 characters; on cdc8e54 44 to 53 made Service names over 63."""
    release = "payments-fraud-detection-production-eu-west-1-blue-ab"
    assert len(release) == 53
    text = template({}, release=release)
    names = {doc["kind"] + "/" + doc["metadata"]["name"] for doc in documents(text)}
    assert all(len(n.split("/", 1)[1]) <= 63 for n in names), names
    limits = {"FlinkDeployment": 45, "CronJob": 52}  # Flink's cluster id; a CronJob's Jobs' names
    long = {n for n in names if len(n.split("/", 1)[1]) > limits.get(n.split("/")[0], 63)}
    assert long == set()
    done = dry_run(cluster, text)
    assert done.returncode == 0, done.stderr
    # The negative control: the server refuses a Service name one character too long.
    service = next(d for d in documents(text) if d["kind"] == "Service")
    service["metadata"]["name"] = "s" * 64
    refused = dry_run(cluster, yaml.safe_dump(service))
    assert refused.returncode != 0
    assert "must be no more than 63 characters" in refused.stderr


def can_i(
    cluster: Cluster, account: str, verb: str, resource: str, namespace: str = NAMESPACE
) -> str:
    done = cluster.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        namespace,
        f"--as=system:serviceaccount:{NAMESPACE}:{account}",
    )
    return done.stdout.strip()


def test_the_jobmanager_may_start_taskmanagers_and_the_other_pods_may_do_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """On cdc8e54 the Flink account had no Role: `auth can-i create pods` answered no."""
    cluster.ok("apply", "-n", NAMESPACE, "-f", "-", stdin=template({}))
    flink, apps = "fs-fraudstream-flink", "fs-fraudstream"
    for verb, resource in (
        ("create", "pods"),
        ("delete", "pods"),
        ("watch", "pods"),
        ("create", "configmaps"),
        ("update", "configmaps"),
        ("get", "deployments.apps"),
    ):
        assert can_i(cluster, flink, verb, resource) == "yes", (verb, resource)
    assert can_i(cluster, flink, "get", "secrets") == "no"
    assert can_i(cluster, flink, "create", "pods", namespace="default") == "no"
    for verb, resource in (("create", "pods"), ("get", "configmaps"), ("get", "secrets")):
        assert can_i(cluster, apps, verb, resource) == "no", (verb, resource)
    # What the API server stored is what was rendered: the job's pods run as the Flink account.
    stored = yaml.safe_load(
        cluster.ok("get", "flinkdeployment", "fs-fraudstream-job", "-n", NAMESPACE, "-o", "yaml")
    )
    assert stored["spec"]["serviceAccount"] == flink
