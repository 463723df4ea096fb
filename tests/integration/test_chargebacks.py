"""`fraudstream chargebacks import` against a real broker: a file with bad rows imports
nothing and names every bad line; a good one sends each chargeback as a fraud label with the
transaction's date, its reason code and its arrival date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.core.settings import Settings
from tests.integration.streaming import running_stack
from tests.integration.test_workbench_page import _feedback


def _import(settings: Settings, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", "chargebacks", "import",
                           str(path), "--json"], env=settings.child_environment(),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_a_bad_file_imports_nothing_and_a_good_one_labels_each_transaction(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "transaction_id,transaction_date,reason_code,received_date\n"
        "tx-1,2026-11-02,10.4,2026-11-20\n"
        "tx-2,2026-13-02,10.4,2026-11-20\n"  # line 3: no such month
        "tx-3,2026-11-02,,2026-11-20\n"  # line 4: no reason code
        "tx-1,2026-11-02,10.4,2026-11-21\n"  # line 5: tx-1 again
        "tx-4,2026-11-02,4837,2099-01-01\n"  # line 6: arrives in the future
        "tx\x075,2026-11-02,4837,2026-11-20\n"  # line 7: a control character in the id
    )
    good = tmp_path / "good.csv"
    good.write_text(
        "transaction_id,transaction_date,reason_code,received_date\n"
        "tx-approved,2026-11-02,10.4,2026-11-20\n"
        "tx-declined,2026-11-03T08:15:00Z,4837,2026-11-21\n"
    )
    with running_stack(tmp_path / "state") as settings:
        refused = _import(settings, bad)
        imported = _import(settings, good)
        sent = _feedback(settings)
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in lines] == [f"line {n}" for n in (3, 4, 5, 6, 7)]
    assert "transaction_date" in lines[0]
    assert "reason_code" in lines[1]
    assert "again (first on line 2)" in lines[2]
    assert "received_date: in the future" in lines[3]
    assert "control character U+0007" in lines[4]
    assert "5 bad rows, nothing imported" in refused.stderr
    assert imported.returncode == 0, imported.stderr
    assert '"imported": 2' in imported.stdout
    by_id = {f.transaction_id: f for f in sent}
    assert set(by_id) == {"tx-approved", "tx-declined"}  # none of the bad file's, not even tx-1
    assert len(sent) == 2
    approved = by_id["tx-approved"]
    assert (approved.label, approved.analyst, approved.note) == ("fraud", "chargebacks",
                                                                 "chargeback 10.4")  # fmt: skip
    assert approved.event_time == 1_793_620_800_000  # 2026-11-02T12:00:00Z
    assert approved.time == 1_795_176_000_000  # arrived 2026-11-20 (noon UTC)
    assert by_id["tx-declined"].event_time == 1_793_693_700_000  # 2026-11-03T08:15:00Z
