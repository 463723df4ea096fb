"""The model registry: immutable version directories and an atomically switched pointer.

Layout::

    REGISTRY/versions/v0001/model.onnx      the served model (input "features", float32)
                           model.txt       the native LightGBM model, for reason codes
                           metadata.json   version, feature names in order, data fingerprint,
                                           parameters, metrics, thresholds, the calibration
                                           of the score into a probability
                           pr_curve.png
    REGISTRY/CURRENT                       the served version's name, replaced atomically
    REGISTRY/SHADOW                        the version scored beside it, not acted on (the
                                           scoring service follows it unless started with
                                           a fixed --shadow)
    REGISTRY/history.json                  promotions and rollbacks, newest last

A version is written in a hidden temporary directory and renamed into place, so a reader
never sees a half-written version; CURRENT is replaced with ``os.replace``, so a reader sees
the old or the new name, never a mix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from models.errors import PromotionRefused, RegistryError
from models.features.definitions import FEATURE_NAMES

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
DEFAULT_REGISTRY = Path(__file__).parents[1] / "registry"
DEFAULT_TOLERANCE = 0.01


def working_registry(configured: Path | None, state_dir: Path) -> Path:
    """The configured registry, or ``registry/`` in the state directory, seeded with a copy
    of the shipped one on first use, so training and promotion never write into the
    installed package (or a clone's tracked files)."""
    if configured is not None:
        return configured
    path = state_dir / "registry"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        staging = state_dir / f".registry-{uuid.uuid4().hex}"
        shutil.copytree(DEFAULT_REGISTRY, staging, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            staging.rename(path)
        except OSError:  # seeded by another process meanwhile, or an error of its own
            shutil.rmtree(staging)
            if not path.is_dir():
                raise
    return path


def inputs_problem(model: Sequence[str], serving: Sequence[str]) -> str | None:
    """Why a model whose inputs are ``model`` cannot serve rows of ``serving`` (the features the
    stream job sends, in order), or None when they are the same list."""
    if list(model) == list(serving):
        return None
    missing = [n for n in serving if n not in model]
    unexpected = [n for n in model if n not in serving]
    parts = [
        f"{len(unexpected)} it needs that the job does not send ({_few(unexpected)})"
        if unexpected
        else "",
        f"{len(missing)} the job sends that it lacks ({_few(missing)})" if missing else "",
    ]
    detail = "; ".join(p for p in parts if p) or "the same names in another order"
    return f"its inputs differ from the serving feature list: {detail}"


def _few(names: Sequence[str], shown: int = 5) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class Promotion(msgspec.Struct, frozen=True):
    version: str
    previous: str | None
    at: int
    action: str  # "promote" or "rollback"


@dataclass(frozen=True)
class Registry:
    root: Path
    serving: tuple[str, ...] = FEATURE_NAMES  # what the job sends (``entities.serving_names``)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def path(self, version: str) -> Path:
        if not VERSION_PATTERN.match(version):
            raise RegistryError(f"not a version name: {version!r} (expected like v0001)")
        path = self.versions_dir / version
        if not path.is_dir():
            raise RegistryError(f"no version {version} in the registry")
        return path

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if VERSION_PATTERN.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def current(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def shadow(self) -> str | None:
        try:
            return (self.root / "SHADOW").read_text().strip() or None
        except FileNotFoundError:
            return None

    def set_shadow(self, version: str | None) -> None:
        """Name the version the scoring service scores beside the current one (None: no
        shadow); its inputs must be among what the job sends."""
        if version is None:
            (self.root / "SHADOW").unlink(missing_ok=True)
            return
        missing = [n for n in self.metadata(version)["feature_names"] if n not in self.serving]
        if missing:
            raise PromotionRefused(f"{version} cannot be the shadow: requests do not carry "
                                   f"{_few(missing)}")  # fmt: skip
        _atomic_write(self.root / "SHADOW", version + "\n")

    def metadata(self, version: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.path(version) / "metadata.json").read_text())
        return loaded

    def history(self) -> list[Promotion]:
        path = self.root / "history.json"
        if not path.is_file():
            return []
        return msgspec.json.decode(path.read_bytes(), type=list[Promotion])

    def publish(
        self,
        files: dict[str, bytes],
        metadata: dict[str, Any],
        named: Callable[[dict[str, Any]], dict[str, bytes]] | None = None,
    ) -> str:
        """Write a new version atomically; return its name (metadata gets ``version``).
        ``named``: files that name the version (a model card), made from its metadata."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.versions_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name, content in files.items():
                (staging / name).write_bytes(content)
            for _ in range(100):
                existing = self.versions()
                version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
                meta = {**metadata, "version": version}
                (staging / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
                for name, content in (named(meta) if named else {}).items():
                    (staging / name).write_bytes(content)
                try:
                    staging.rename(self.versions_dir / version)  # fails if taken meanwhile
                except OSError:
                    continue
                return version
            raise RegistryError("could not allocate a version name")
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    def _point_to(self, version: str, action: str) -> None:
        previous = self.current()
        _atomic_write(self.root / "CURRENT", version + "\n")
        entry = Promotion(version, previous, int(time.time() * 1000), action)
        history = [*self.history(), entry]
        _atomic_write(self.root / "history.json", msgspec.json.format(
            msgspec.json.encode(history)).decode() + "\n")  # fmt: skip

    def promote(
        self, version: str, tolerance: float = DEFAULT_TOLERANCE, force: bool = False,
        candidate_pr_auc: float | None = None, current_pr_auc: float | None = None,
        serving: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        """Make ``version`` current, unless its inputs are not the ``serving`` feature list
        (never overridden: every decision would be rules-only), or its PR-AUC is worse than
        the current model's by more than ``tolerance`` (``force`` skips this gate). Figures
        default to each version's own evaluation split; pass both to compare on the same
        data."""
        self.path(version)
        wanted = self.serving if serving is None else serving
        if problem := inputs_problem(self.metadata(version)["feature_names"], wanted):
            raise PromotionRefused(f"{version} refused: {problem}")
        current = self.current()
        if current is not None and current != version and not force:
            ours = candidate_pr_auc
            theirs = current_pr_auc
            if ours is None or theirs is None:
                ours = float(self.metadata(version)["metrics"]["pr_auc"])
                theirs = float(self.metadata(current)["metrics"]["pr_auc"])
            if ours < theirs - tolerance:
                raise PromotionRefused(
                    f"{version} refused: PR-AUC {ours:.4f} is worse than {current}'s {theirs:.4f}"
                    f" by more than the tolerance {tolerance}"
                )
        self._point_to(version, "promote")

    def rollback(self) -> str:
        """Point CURRENT back to what it was before the current version's latest promotion
        (repeatable: promote v1, v2, v3; rollback gives v2, again v1); return it."""
        current = self.current()
        for entry in reversed(self.history()):
            promoted_here = entry.action == "promote" and entry.version == current
            if promoted_here and entry.previous and entry.previous != current:
                self.path(entry.previous)
                names = self.metadata(entry.previous)["feature_names"]
                if problem := inputs_problem(names, self.serving):
                    raise RegistryError(f"cannot roll back to {entry.previous}: {problem}")
                self._point_to(entry.previous, "rollback")
                return entry.previous
        raise RegistryError("nothing to roll back to: no earlier promotion is recorded")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
