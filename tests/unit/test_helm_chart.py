"""The Helm chart through the real Helm engine (helm-python-sdk): lint, render with defaults
and every toggle, validate each object against its schema (Kubernetes' own for built-in kinds,
the Flink Kubernetes Operator's vendored CRD, the Prometheus Operator's models), and check
what the schemas cannot: selectors, ports, probes, resources, non-root, labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus

CHART = Path(__file__).resolve().parents[2] / "helm" / "fraudstream"
CRD = (Path(__file__).resolve().parents[1] / "schemas" / "flink-kubernetes-operator"
       / "flinkdeployments.flink.apache.org-v1.yml")  # fmt: skip
KUBERNETES = "1.30.0"
ALL_ON = {
    "existingSecret": "",
    "monitoring": {"additionalLabels": {"release": "kube-prometheus-stack"},
                   "serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                   "prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}},
}  # fmt: skip
TOGGLES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "every monitoring object": ALL_ON,
    "an existing secret": {"existingSecret": "bank-secrets"},
    "autoscaling on in-flight requests": {
        "scoring": {"autoscaling": {"targetInFlightPerPod": "16"}}
    },
    "no autoscaler, job or network policy": {
        "scoring": {"autoscaling": {"enabled": False}}, "job": {"enabled": False},
        "networkPolicy": {"enabled": False},
    },
}  # fmt: skip
BUILT_IN = {"ConfigMap", "Secret", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "PersistentVolumeClaim", "NetworkPolicy"}  # fmt: skip
MONITORS = {"ServiceMonitor": prometheus.ServiceMonitor, "PodMonitor": prometheus.PodMonitor,
            "PrometheusRule": prometheus.PrometheusRule}  # fmt: skip


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(str(CHART))
    try:
        files = chart.render(values, name="fs", namespace="fraud")
    finally:
        chart.close()
    return [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]


def test_the_chart_lints_strictly() -> None:
    report = helm_python.lint(str(CHART), strict=True, kube_version=KUBERNETES)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []  # info only (no icon)


@pytest.mark.parametrize("values", TOGGLES.values(), ids=TOGGLES.keys())
def test_every_object_validates_against_its_schema(values: dict[str, Any]) -> None:
    crd = yaml.safe_load(CRD.read_text())
    flink = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    docs = render(values)
    kinds = {doc["kind"] for doc in docs}
    assert kinds - BUILT_IN - set(MONITORS) <= {"FlinkDeployment"}
    for doc in docs:
        if doc["kind"] in BUILT_IN:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        elif doc["kind"] == "FlinkDeployment":
            jsonschema.validate(doc, flink["schema"]["openAPIV3Schema"])
        else:
            MONITORS[doc["kind"]].model_validate(doc)


def _hpa_metrics(values: dict[str, Any]) -> list[dict[str, Any]]:
    hpa = next(d for d in render(values) if d["kind"] == "HorizontalPodAutoscaler")
    metrics: list[dict[str, Any]] = hpa["spec"]["metrics"]
    return metrics


def test_toggles_add_what_they_name() -> None:
    default = {doc["kind"] for doc in render({})}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "FlinkDeployment", "NetworkPolicy", "Secret"} <= default  # fmt: skip
    assert not default & set(MONITORS)
    on = render(ALL_ON)
    assert set(MONITORS) <= {doc["kind"] for doc in on}
    boards = [
        d for d in on if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]
    ]
    assert len(boards) == 5
    assert all(doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
               for doc in on if doc["kind"] in MONITORS)  # fmt: skip
    in_flight = _hpa_metrics(TOGGLES["autoscaling on in-flight requests"])
    assert [m["type"] for m in in_flight] == ["Resource", "Pods"]
    assert _hpa_metrics({}) == in_flight[:1]  # CPU only by default
    secret = render({"existingSecret": "bank-secrets"})
    assert "Secret" not in {doc["kind"] for doc in secret}
    refs = [v["secret"]["secretName"] for _, spec in _pods(secret) for v in spec["volumes"]
            if "secret" in v]  # fmt: skip
    assert len(refs) == 3  # scoring, feedback, job
    assert set(refs) == {"bank-secrets"}


def test_secrets_are_files_never_environment_and_the_scoring_token_is_on_by_default() -> None:
    """On cdc8e54 the scoring API had no token unless one was given, and every secret was in
    every container's environment."""
    docs = render({})
    for _, spec in _pods(docs):
        for container in spec["containers"]:
            assert not any("secretRef" in e for e in container.get("envFrom", []))
            assert any(m["name"] == "secrets" and m["readOnly"] for m in container["volumeMounts"])
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    assert len(secret["stringData"]["scoring_token"]) == 48  # made, since none was given
    assert "token_key" not in secret["stringData"]  # empty ones are left out
    given = next(d for d in render({"secrets": {"scoring_token": "mine"}}) if d["kind"] == "Secret")
    assert given["stringData"]["scoring_token"] == "mine"
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith(
        "-config"))  # fmt: skip
    assert config["data"]["FRAUDSTREAM_SECRETS_DIR"] == "/etc/fraudstream/secrets"
    assert config["data"]["FRAUDSTREAM_SCORING_URL"] == "http://fs-fraudstream-scoring:8080"
    assert "http://fs-fraudstream-scoring" in {
        f"http://{d['metadata']['name']}" for d in docs if d["kind"] == "Service"
    }


def test_the_scoring_api_admits_only_the_jobs_pods_and_prometheus() -> None:
    """On cdc8e54 the NetworkPolicy limited ports, not callers."""
    docs = render({})
    pods = {labels["app.kubernetes.io/component"]: labels for labels, _ in _pods(docs)}
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"
                and d["metadata"]["name"].endswith("-scoring")]  # fmt: skip
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], pods["scoring"])
    [rule] = policy["spec"]["ingress"]
    same_namespace = [p["podSelector"]["matchLabels"] for p in rule["from"]
                      if "namespaceSelector" not in p]  # fmt: skip
    assert [s for s in same_namespace if _selects(s, pods["job"])] == same_namespace
    assert not any(_selects(s, pods["feedback"]) for s in same_namespace)
    prometheus = [p for p in rule["from"] if "namespaceSelector" in p]
    assert prometheus == [{"namespaceSelector": {}, "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]  # fmt: skip


def _pods(docs: list[dict[str, Any]]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(pod labels, pod spec) of every Deployment and of the FlinkDeployment's pod template."""
    pods = [(d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
            for d in docs if d["kind"] == "Deployment"]  # fmt: skip
    pods += [(d["spec"]["podTemplate"]["metadata"]["labels"], d["spec"]["podTemplate"]["spec"])
             for d in docs if d["kind"] == "FlinkDeployment"]  # fmt: skip
    return pods


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_ports_probes_resources_and_non_root() -> None:
    docs = render(ALL_ON)
    pods = _pods(docs)
    ports = {p["name"]: p["containerPort"] for _, spec in pods for c in spec["containers"]
             for p in c.get("ports", [])}  # fmt: skip
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "fraudstream", doc["kind"]
        assert labels["helm.sh/chart"].startswith("fraudstream-"), doc["kind"]
        if doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
            assert _selects(doc["spec"]["selector"]["matchLabels"],
                            doc["spec"]["template"]["metadata"]["labels"])  # fmt: skip
            assert spec["securityContext"]["runAsNonRoot"] is True
            for container in spec["containers"]:
                assert container["readinessProbe"]
                assert container["livenessProbe"]
                assert container["resources"]["requests"]
                assert container["resources"]["limits"]
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
        if doc["kind"] in {"Service", "ServiceMonitor", "PodMonitor", "PodDisruptionBudget"}:
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(_selects(selector, labels) for labels, _ in pods), doc["metadata"]["name"]
        if doc["kind"] == "ServiceMonitor":
            assert all(e["port"] in ports for e in doc["spec"]["endpoints"])
        if doc["kind"] == "PodMonitor":
            assert all(e["port"] in ports for e in doc["spec"]["podMetricsEndpoints"])
    assert ports["metrics"] not in {9249, 9250}
    assert ports["flink-metrics"] == 9249


def test_the_rule_in_the_chart_is_the_tested_rules_file() -> None:
    [rule] = [d for d in render(ALL_ON) if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((CHART / "monitoring" / "rules.yml").read_text())


def test_the_validators_refuse_a_planted_mistake() -> None:
    """The negative control: a field Kubernetes does not know, a wrong type for the operator."""
    docs = render({})
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    flink = next(d for d in docs if d["kind"] == "FlinkDeployment")
    flink["spec"]["job"]["parallelism"] = "two"
    crd = yaml.safe_load(CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(flink, schema["schema"]["openAPIV3Schema"])
