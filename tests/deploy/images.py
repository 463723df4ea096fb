"""The Dockerfile's images, built here with podman from a Debian 12 root file system made by
mmdebstrap (no registry is needed), and run on the host's network against a local stack."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from pathlib import Path

from tests.deploy.tools import tool

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "fraudstream" / "images"
BASE = "localhost/fraudstream-base:bookworm"
TARGETS = ("scoring", "feedback", "training", "workbench", "job")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # this machine's, which pip must trust here


def _containers_conf() -> Path:
    """runc with cgroupfs (crun fails on this host's cgroups) and ulimits within the caller's
    own hard limits (raising them is not permitted here)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 8192)
    path = CACHE / "containers.conf"
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
""")
    return path


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"CONTAINERS_CONF": str(_containers_conf())}
    return subprocess.run(
        [tool("podman"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def base_image() -> str:
    """Debian 12 with Python 3.11 and its venv module, imported once from a cached tarball."""
    if podman("image", "exists", BASE).returncode == 0:
        return BASE
    tarball = CACHE / "debian-bookworm-python.tar"
    if not tarball.is_file():
        partial = CACHE / "partial.tar"
        done = subprocess.run(
            [
                tool("mmdebstrap"),
                "--mode=root",
                "--variant=apt",
                "--quiet",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(partial),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        partial.rename(tarball)
    done = podman("import", str(tarball), BASE, timeout=300)
    assert done.returncode == 0, done.stderr
    return BASE


def build(target: str) -> str:
    """``podman build --target`` from the local base; layers and pip's cache are reused."""
    tag = f"localhost/fraudstream-{target}:test"
    done = podman(
        "build",
        "--pull=never",
        "--target",
        target,
        "--build-arg",
        f"BASE={base_image()}",
        "--volume",
        f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--tag",
        tag,
        str(ROOT),
        timeout=1800,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return tag


def readable_secrets(secrets_dir: Path, into: Path) -> Path:
    """A copy of the stack's owner-only secret files that the images' user (10001) may read,
    as the chart's Secret volume gives them."""
    into.mkdir(parents=True, exist_ok=True)
    for file in secrets_dir.iterdir():
        shutil.copyfile(file, into / file.name)
        os.chown(into / file.name, 10001, 10001)
        (into / file.name).chmod(0o400)
    return into
