"""The scoring service's body budget follows the memory limit it runs under."""

from __future__ import annotations

from pathlib import Path

from services.scoring.server.app import DEFAULT_BODY_BUDGET, body_budget, memory_limit_bytes


def test_the_limit_is_read_from_cgroup_v2_or_v1_and_unlimited_is_none(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("max\n")
    v1.write_text("1073741824\n")
    assert memory_limit_bytes((v2, v1)) == 1 << 30
    v1.write_text("9223372036854771712\n")  # v1's "unlimited"
    assert memory_limit_bytes((v2, v1)) is None
    assert memory_limit_bytes((tmp_path / "absent",)) is None


def test_a_quarter_of_the_limit_is_shared_by_the_workers() -> None:
    assert body_budget(1 << 30, 1) == 256 << 20  # a 1 GiB pod: 256 MiB, not 64 x 8 MiB
    assert body_budget(1 << 30, 4) == 64 << 20
    assert body_budget(None, 2) == DEFAULT_BODY_BUDGET
