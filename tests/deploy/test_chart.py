"""What the schemas cannot check, on the chart as the real helm renders it: required secrets
and bucket, who may reach what, every worker scraped, one value per knob, checksums that roll
pods, shared storage, disruption budgets and spreading, non-root everywhere."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.chart import CHART, REQUIRED, documents, helm, merged, template

Doc = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Doc]:
    return documents(template(values or {}))


def one(docs: list[Doc], kind: str, suffix: str = "") -> Doc:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return found


def pods(docs: list[Doc]) -> dict[str, tuple[dict[str, str], Doc]]:
    """Pod labels and spec by name: each Deployment's, the CronJob's, and the Flink job's
    JobManager and TaskManager (the common template merged with each one's by container)."""
    found = {
        d["metadata"]["name"]: (
            d["spec"]["template"]["metadata"]["labels"],
            d["spec"]["template"]["spec"],
        )
        for d in docs
        if d["kind"] == "Deployment"
    }
    for cron in (d for d in docs if d["kind"] == "CronJob"):
        template_ = cron["spec"]["jobTemplate"]["spec"]["template"]
        found[cron["metadata"]["name"]] = (template_["metadata"]["labels"], template_["spec"])
    for flink in (d for d in docs if d["kind"] == "FlinkDeployment"):
        common = flink["spec"]["podTemplate"]
        for role, component in (("jobManager", "jobmanager"), ("taskManager", "taskmanager")):
            spec = dict(common["spec"])
            own = flink["spec"][role]["podTemplate"]["spec"]["containers"][0]
            spec["containers"] = [common["spec"]["containers"][0] | own]
            labels = common["metadata"]["labels"] | {"component": component}  # Flink's label
            found[f"{flink['metadata']['name']}/{component}"] = (labels, spec)
    return found


def ports(spec: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_an_install_without_its_key_or_its_bucket_is_refused_in_one_line() -> None:
    """On cdc8e54 an empty token_key was accepted (and crashed the job and the feedback app),
    and checkpoints defaulted to a bucket someone else owns."""
    cases: dict[str, dict[str, Any]] = {
        "image.registry is required": {"image": {"registry": ""}},
        "secrets.token_key is required": {"secrets": {"token_key": ""}},
        "secrets.workbench_database_url is required": {"secrets": {"workbench_database_url": ""}},
        "secrets.workbench_session_key must be hex": {"secrets": {"workbench_session_key": "k"}},
        "secrets.token_key must be hex": {"secrets": {"token_key": "not-hex-" * 10}},
        "job.checkpointDir is required": {"job": {"checkpointDir": ""}},
        "job.taskManager.slots must be 1 to 16": {"job": {"taskManager": {"slots": 17}}},
    }
    for message, values in cases.items():
        done = helm("template", "fs", str(CHART), values=merged(REQUIRED, values))
        assert done.returncode == 1
        assert message in done.stderr, done.stderr
    # The negative control: with both given it renders, and a Secret of the user's needs neither.
    assert helm("template", "fs", str(CHART), values=REQUIRED).returncode == 0
    own = merged(REQUIRED, {"existingSecret": "bank", "secrets": {"token_key": ""}})
    assert helm("template", "fs", str(CHART), values=own).returncode == 0


def test_secrets_are_files_never_environment_and_the_scoring_url_is_the_releases() -> None:
    docs = render()
    for name, (_, spec) in pods(docs).items():
        for container in spec["containers"]:
            assert not any("secretRef" in e for e in container.get("envFrom", [])), name
            assert any(m["name"] == "secrets" and m["readOnly"] for m in container["volumeMounts"])
    secret = one(docs, "Secret")
    assert len(secret["stringData"]["scoring_token"]) == 48  # made, since none was given
    assert secret["stringData"]["token_key"] == REQUIRED["secrets"]["token_key"]
    config = one(docs, "ConfigMap", "-config")
    assert config["data"]["FRAUDSTREAM_SCORING_URL"] == "http://fs-fraudstream-scoring:8080"
    assert "fs-fraudstream-scoring" in {
        d["metadata"]["name"] for d in docs if d["kind"] == "Service"
    }
    mine = render({"existingSecret": "bank-secrets", "secrets": {"token_key": ""}})
    assert "Secret" not in {d["kind"] for d in mine}
    refs = {
        v["secret"]["secretName"]
        for _, spec in pods(mine).values()
        for v in spec["volumes"]
        if "secret" in v
    }
    assert refs == {"bank-secrets"}


def test_the_scoring_api_admits_only_the_jobs_pods_and_prometheus() -> None:
    docs = render()
    labels = {name: pod_labels for name, (pod_labels, _) in pods(docs).items()}
    policy = one(docs, "NetworkPolicy", "-scoring")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels["fs-fraudstream-scoring"])
    [rule] = policy["spec"]["ingress"]
    same_namespace = [
        p["podSelector"]["matchLabels"] for p in rule["from"] if "namespaceSelector" not in p
    ]
    callers = {
        name
        for name, pod_labels in labels.items()
        if any(selects(s, pod_labels) for s in same_namespace)
    }
    assert callers == {"fs-fraudstream-job/jobmanager", "fs-fraudstream-job/taskmanager"}
    assert [p for p in rule["from"] if "namespaceSelector" in p] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


def test_flinks_own_ports_are_open_between_its_pods_and_to_the_operator() -> None:
    """On cdc8e54 one policy isolated the job's pods and admitted only metrics ports: the
    JobManager's RPC (6123), blob (6124), the TaskManagers' data ports and the REST port the
    operator polls (8081) were all blocked."""
    docs = render({"job": {"taskManager": {"slots": 3}}})
    policy = one(docs, "NetworkPolicy", "-job")
    job = {k: v for k, v in pods(docs).items() if k.startswith("fs-fraudstream-job/")}
    assert all(
        selects(policy["spec"]["podSelector"]["matchLabels"], labels) for labels, _ in job.values()
    )
    among, operator, prometheus = policy["spec"]["ingress"]
    assert "ports" not in among  # every port, between the job's own pods
    assert all(
        selects(among["from"][0]["podSelector"]["matchLabels"], labels)
        for labels, _ in job.values()
    )
    assert operator["ports"] == [{"port": 8081, "protocol": "TCP"}]
    assert operator["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "flink-kubernetes-operator"
    }
    assert prometheus["ports"] == [
        {"port": 9249, "protocol": "TCP"},
        {"port": 9300, "endPort": 9302, "protocol": "TCP"},
    ]


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_every_python_worker_is_scraped_and_no_target_is_down_by_design(slots: int) -> None:
    """On cdc8e54 two workers per TaskManager served 9300 and 9301 and only 9300 was scraped,
    while the JobManager's 9300 (no worker there) was always down."""
    docs = render(
        merged(
            {"monitoring": {"podMonitor": {"enabled": True}}},
            {"job": {"taskManager": {"slots": slots}}},
        )
    )
    flink = one(docs, "FlinkDeployment")
    assert flink["spec"]["flinkConfiguration"]["taskmanager.numberOfTaskSlots"] == str(slots)
    pod = pods(docs)
    jobmanager = ports(pod["fs-fraudstream-job/jobmanager"][1])
    taskmanager = ports(pod["fs-fraudstream-job/taskmanager"][1])
    assert jobmanager == {"flink-metrics": 9249}
    assert taskmanager == {"flink-metrics": 9249} | {f"worker-{i}": 9300 + i for i in range(slots)}
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    for monitor in monitors:
        scraped = [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]]
        chosen = [
            name
            for name, (labels, _) in pod.items()
            if selects(monitor["spec"]["selector"]["matchLabels"], labels)
        ]
        assert chosen, monitor["metadata"]["name"]
        for name in chosen:  # every port a monitor scrapes exists on every pod it selects
            assert set(scraped) <= set(ports(pod[name][1])), (monitor["metadata"]["name"], name)
    workers = one(docs, "PodMonitor", "-job")
    assert [e["port"] for e in workers["spec"]["podMetricsEndpoints"]] == [
        f"worker-{i}" for i in range(slots)
    ]


def test_one_value_per_knob_and_a_change_of_settings_rolls_the_pods() -> None:
    base = render()
    changed = render({"config": {"job_parallelism": "5", "job_checkpoint_interval_ms": "2500"}})
    flink = one(changed, "FlinkDeployment")
    assert flink["spec"]["job"]["parallelism"] == 5
    assert flink["spec"]["flinkConfiguration"]["parallelism.default"] == "5"
    assert flink["spec"]["flinkConfiguration"]["execution.checkpointing.interval"] == "2500 ms"
    assert one(changed, "ConfigMap", "-config")["data"]["FRAUDSTREAM_JOB_PARALLELISM"] == "5"

    def annotations(docs: list[Doc]) -> dict[str, dict[str, str]]:
        out = {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]
            for d in docs
            if d["kind"] == "Deployment"
        }
        out["job"] = one(docs, "FlinkDeployment")["spec"]["podTemplate"]["metadata"]["annotations"]
        return out

    before, after = annotations(base), annotations(changed)
    assert (
        before.keys()
        == after.keys()
        == {"fs-fraudstream-scoring", "fs-fraudstream-feedback", "fs-fraudstream-workbench", "job"}
    )
    for name in before:
        assert before[name]["checksum/config"] != after[name]["checksum/config"], name
    again = annotations(render())
    assert {n: a["checksum/config"] for n, a in again.items()} == {
        n: a["checksum/config"] for n, a in before.items()
    }


def test_models_and_the_lake_are_shared_volumes_and_flink_keeps_state_in_the_users_bucket() -> None:
    """On cdc8e54 scoring kept its registry on an emptyDir and the lake sat on a ReadWriteOnce
    volume of the feedback pod: a promotion needed a new image, nothing could train in-cluster."""
    docs = render()
    pod = pods(docs)
    claims = {
        name: {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        for name, (_, spec) in pod.items()
    }
    assert claims["fs-fraudstream-scoring"] == {"models": "fs-fraudstream-models"}
    assert claims["fs-fraudstream-feedback"] == {"lake": "fs-fraudstream-lake"}
    assert claims["fs-fraudstream-training"] == {
        "models": "fs-fraudstream-models",
        "lake": "fs-fraudstream-lake",
    }
    for claim in (d for d in docs if d["kind"] == "PersistentVolumeClaim"):
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    training = pod["fs-fraudstream-training"][1]["containers"][0]
    assert {
        m["mountPath"]: m.get("readOnly", False)
        for m in training["volumeMounts"]
        if m["name"] in {"models", "lake"}
    } == {"/var/lib/fraudstream": False, "/var/lib/fraudstream-lake": True}
    assert training["args"][:3] == ["retrain", "--lake", "/var/lib/fraudstream-lake/lake"]
    own = render({"storage": {"models": {"existingClaim": "nfs-models"}}})
    assert "fs-fraudstream-models" not in {d["metadata"]["name"] for d in own}
    config = one(docs, "FlinkDeployment")["spec"]["flinkConfiguration"]
    bucket = REQUIRED["job"]["checkpointDir"]
    assert config["execution.checkpointing.dir"] == f"{bucket}/fs/checkpoints"
    assert config["high-availability.type"] == "kubernetes"
    assert config["high-availability.storageDir"] == f"{bucket}/fs/ha"


def test_every_deployment_has_a_disruption_budget_and_scoring_spreads() -> None:
    docs = render()
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for name, (labels, _) in pods(docs).items():
        if "/" in name or name.endswith("-training"):
            continue  # the operator's pods and the CronJob's
        assert [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)], name
    affinity = pods(docs)["fs-fraudstream-scoring"][1]["affinity"]["podAntiAffinity"]
    terms = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert {t["podAffinityTerm"]["topologyKey"] for t in terms} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }


def test_every_pod_runs_as_non_root_read_only_with_probes_and_limits() -> None:
    docs = render({"monitoring": {"serviceMonitor": {"enabled": True}}})
    for name, (_, spec) in pods(docs).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            if "/" not in name and not name.endswith("-training"):
                assert container["readinessProbe"], name
                assert container["livenessProbe"], name
            if "/" not in name:  # the operator sizes Flink's from its resource fields
                assert container["resources"]["requests"], name
                assert container["resources"]["limits"], name
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "-scoring")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])


def test_the_rule_in_the_chart_is_the_tested_rules_file() -> None:
    docs = render({"monitoring": {"prometheusRule": {"enabled": True}}})
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "monitoring" / "rules.yml").read_text())


def test_the_topics_exist_before_the_job_or_the_feedback_app_reads_them() -> None:
    """The job's JobManager and the feedback app create the topics first (kept if they exist),
    the strategy topic compacted: a broker's auto-creation would make it an ordinary one."""
    docs = render({"topics": {"partitions": 12, "replicationFactor": 3}})
    flink = one(docs, "FlinkDeployment")["spec"]
    feedback = one(docs, "Deployment", "-feedback")["spec"]["template"]["spec"]
    for init in (
        flink["jobManager"]["podTemplate"]["spec"]["initContainers"],
        feedback["initContainers"],
    ):
        [topics] = init
        assert topics["args"][:6] == [
            "topics",
            "create",
            "--partitions",
            "12",
            "--replication-factor",
            "3",
        ]
        assert topics["securityContext"]["readOnlyRootFilesystem"] is True
    assert "initContainers" not in flink["taskManager"]["podTemplate"]["spec"]
    off = render({"topics": {"create": False}})
    assert "initContainers" not in one(off, "Deployment", "-feedback")["spec"]["template"]["spec"]


def test_two_long_release_names_never_share_an_object_name() -> None:
    """Cut to their limits, names keep a hash of the whole: the blue and green releases of one
    namespace would otherwise share the Flink job (and its HA ConfigMaps) and the CronJob."""
    blue, green = (
        documents(template({}, release=f"payments-fraud-detection-production-eu-west-1-{c}"))
        for c in ("blue", "green")
    )
    names = [{f"{d['kind']}/{d['metadata']['name']}" for d in docs} for docs in (blue, green)]
    assert names[0] & names[1] == set()
    short = {f"{d['kind']}/{d['metadata']['name']}" for d in render()}
    assert "FlinkDeployment/fs-fraudstream-job" in short  # no hash when the name fits


def test_the_secret_checksum_changes_with_the_secrets_alone() -> None:
    """A scoring token the chart makes is random at every render: in the checksum, every
    `helm template` (GitOps) would roll every pod and upgrade the job."""

    def checksums(values: dict[str, Any]) -> set[str]:
        docs = render(values)
        found = {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
            for d in docs
            if d["kind"] == "Deployment"
        }
        found.add(
            one(docs, "FlinkDeployment")["spec"]["podTemplate"]["metadata"]["annotations"][
                "checksum/secret"
            ]
        )
        return found

    first = checksums({})
    assert len(first) == 1
    assert checksums({}) == first
    assert checksums({"secrets": {"redis_password": "changed"}}) != first


def test_flink_gets_the_jvm_options_java_needs_and_the_users_options_win() -> None:
    """The operator replaces the image's conf/: the options Flink needs on Java 17+ come from
    the chart, and an option of the user's overrides the chart's."""
    config = one(render(), "FlinkDeployment")["spec"]["flinkConfiguration"]
    assert "--add-opens=java.base/java.util=ALL-UNNAMED" in config["env.java.opts.all"]
    assert config["execution.checkpointing.externalized-checkpoint-retention"] == (
        "RETAIN_ON_CANCELLATION"
    )
    mine = render({"job": {"flinkConfiguration": {"execution.checkpointing.num-retained": "9"}}})
    assert (
        one(mine, "FlinkDeployment")["spec"]["flinkConfiguration"][
            "execution.checkpointing.num-retained"
        ]
        == "9"
    )
