"""A real Kubernetes API server (with etcd in its process) on loopback ports, for server-side
dry runs and RBAC questions. No kubelet: objects are stored and checked, pods never run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.devstack import processes
from services.devstack.processes import free_loopback_port
from tests.deploy.tools import tool


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(folder: Path) -> None:
    """A CA, the server's certificate for 127.0.0.1, an admin in system:masters, and the key
    pair service-account tokens are signed with."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=fraudstream-test-ca",
        cwd=folder,
    )
    for name, subject in (
        ("server", "/CN=kube-apiserver"),
        ("admin", "/O=system:masters/CN=admin"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=folder,
        )
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=folder,
        )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


def _kubeconfig(folder: Path, port: int) -> Path:
    path = folder / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "https://127.0.0.1:{port}", certificate-authority: "{folder}/ca.crt"}}
users:
- name: admin
  user: {{client-certificate: "{folder}/admin.crt", client-key: "{folder}/admin.key"}}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
""")
    return path


class Cluster:
    """kubectl against the test API server."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.kubectl(*args, stdin=stdin)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout


@contextmanager
def api_server(folder: Path) -> Iterator[Cluster]:
    """Start the API server, wait until it is ready (90 s at most), stop it by its PID."""
    certs = folder / "certs"
    _certificates(certs)
    port = free_loopback_port()
    argv = [
        tool("kube-apiserver"),
        "--etcd-dir",
        str(folder / "etcd"),
        "--etcd-port",
        str(free_loopback_port()),
        "--etcd-peer-port",
        str(free_loopback_port()),
        "--",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--advertise-address=127.0.0.1",
        f"--cert-dir={certs}",
        f"--tls-cert-file={certs}/server.crt",
        f"--tls-private-key-file={certs}/server.key",
        f"--client-ca-file={certs}/ca.crt",
        f"--service-account-key-file={certs}/sa.pub",
        f"--service-account-signing-key-file={certs}/sa.key",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=Node,RBAC",
        "--disable-admission-plugins=ServiceAccount",
        "--enable-priority-and-fairness=false",
        "--endpoint-reconciler-type=none",
    ]
    record = processes.spawn("kube-apiserver", argv, folder / "kube-apiserver.log")
    cluster = Cluster(_kubeconfig(certs, port))
    try:
        processes.wait_until(
            lambda: cluster.kubectl("get", "--raw", "/readyz").stdout == "ok",
            90,
            f"kube-apiserver (log: {record.log})",
            interval=0.5,
        )
        yield cluster
    finally:
        processes.stop(record)
