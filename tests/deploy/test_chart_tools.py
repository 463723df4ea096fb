"""The chart and the Dockerfile through the tools a platform team runs: helm lint --strict and
helm template with every toggle, kubeconform against Kubernetes' schemas and the CRDs (offline,
strict), kube-score, hadolint. Each with a negative control: the tool refuses a planted fault."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    KUBERNETES,
    REQUIRED,
    ROOT,
    SCHEMAS,
    TOGGLES,
    documents,
    helm,
    template,
)
from tests.deploy.tools import tool

BUILT_IN_SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
CRDS = [
    *SCHEMAS.glob("flink-kubernetes-operator/*.yml"),
    *SCHEMAS.glob("prometheus-operator/*.yaml"),
]
# kube-score's checks this chart does not follow, and why (docs/deployment.md says the same).
KUBE_SCORE_IGNORED = {
    # The chart's default tag is the appVersion and pullPolicy IfNotPresent: a pinned tag
    # never changes, and Always would make every pod start depend on the registry.
    "container-image-pull-policy",
    # A NetworkPolicy of egress for every pod would have to name the user's Kafka, Redis and
    # object store; the chart limits ingress (who may call each component) and documents it.
    "pod-networkpolicy",
}


@pytest.fixture(scope="module")
def built_in_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubernetes-validate's strict schemas, each made to find its definitions beside it: they
    name themselves by kubernetes.io URLs ($id), which an offline kubeconform cannot load."""
    version = f"v{KUBERNETES}-local-strict"
    root = tmp_path_factory.mktemp("schemas")
    (root / version).mkdir()
    for source in (BUILT_IN_SCHEMAS / version).glob("*.json"):
        schema = json.loads(
            source.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
        )
        schema.pop("$id", None)
        (root / version / source.name).write_text(json.dumps(schema))
    return root


@pytest.fixture(scope="module")
def crd_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vendored CRDs as kubeconform reads schemas: <group>/<kind>_<version>.json."""
    root = tmp_path_factory.mktemp("crd-schemas")
    for path in CRDS:
        for crd in yaml.safe_load_all(path.read_text()):
            spec = crd["spec"]
            for version in spec["versions"]:
                target = (
                    root / spec["group"] / f"{spec['names']['kind'].lower()}_{version['name']}.json"
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(version["schema"]["openAPIV3Schema"]))
    return root


def kubeconform(text: str, schemas: tuple[Path, Path]) -> subprocess.CompletedProcess[str]:
    built_in_schemas, crd_schemas = schemas
    version = "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}"
    built_in = f"{built_in_schemas}/{version}/" + "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    crds = f"{crd_schemas}/" + "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
    argv = [
        tool("kubeconform"),
        "-strict",
        "-summary",
        "-output",
        "json",
        "-kubernetes-version",
        KUBERNETES,
        "-schema-location",
        built_in,
        "-schema-location",
        crds,
        "-",
    ]
    return subprocess.run(
        argv, input=text, capture_output=True, text=True, timeout=120, check=False
    )


def test_helm_lints_the_chart_strictly_with_every_toggle() -> None:
    for name, values in TOGGLES.items():
        from tests.deploy.chart import merged

        done = helm("lint", "--strict", str(CHART), values=merged(REQUIRED, values))
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        assert "[WARNING]" not in done.stdout, done.stdout
        assert "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize("values", TOGGLES.values(), ids=TOGGLES.keys())
def test_every_object_of_every_toggle_is_valid_for_kubeconform(
    values: dict[str, Any], built_in_schemas: Path, crd_schemas: Path
) -> None:
    done = kubeconform(template(values), (built_in_schemas, crd_schemas))
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["resources"]
    summary = report["summary"]
    assert summary["invalid"] == summary["errors"] == summary["skipped"] == 0, summary
    assert summary["valid"] == len(documents(template(values)))


def test_kubeconform_refuses_a_planted_mistake(built_in_schemas: Path, crd_schemas: Path) -> None:
    """The negative control: a field Kubernetes does not know, a wrong type for the operator."""
    docs = documents(template({}))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    flink = next(d for d in docs if d["kind"] == "FlinkDeployment")
    flink["spec"]["job"]["parallelism"] = "two"
    for doc in (deployment, flink):
        done = kubeconform(yaml.safe_dump(doc), (built_in_schemas, crd_schemas))
        assert done.returncode == 1, doc["kind"]
        assert json.loads(done.stdout)["summary"]["invalid"] == 1


def kube_score(text: str) -> subprocess.CompletedProcess[str]:
    argv = [
        tool("kube-score"),
        "score",
        "--output-format",
        "ci",
        "--kubernetes-version",
        "v1.37",
        *(f"--ignore-test={name}" for name in sorted(KUBE_SCORE_IGNORED)),
        "-",
    ]
    return subprocess.run(
        argv, input=text, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("values", TOGGLES.values(), ids=TOGGLES.keys())
def test_kube_score_finds_nothing_but_what_is_explained(values: dict[str, Any]) -> None:
    done = kube_score(template(values))
    findings = [
        line for line in done.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))
    ]
    assert findings == [], "\n".join(findings)
    assert done.returncode == 0


def test_kube_score_flags_a_planted_mistake() -> None:
    """The negative control: a Deployment without resources or probes is reported."""
    docs = documents(template({}))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["resources"], container["readinessProbe"]
    done = kube_score(yaml.safe_dump_all(docs))
    assert done.returncode != 0
    assert "[CRITICAL]" in done.stdout


def test_hadolint_finds_nothing_in_the_dockerfile_and_flags_a_planted_mistake(
    tmp_path: Path,
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    hadolint = tool("hadolint")
    clean = subprocess.run(
        [hadolint, "-"], input=dockerfile, capture_output=True, text=True, timeout=60, check=False
    )
    assert clean.returncode == 0, clean.stdout
    planted = dockerfile + "\nRUN apt-get install curl\n"
    bad = subprocess.run(
        [hadolint, "-"], input=planted, capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 1
    assert "DL3008" in bad.stdout  # apt packages unpinned
