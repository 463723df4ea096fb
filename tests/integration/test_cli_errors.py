"""Bad flags and files: one line naming the problem, a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run
from tests.unit.test_card_csv import HEADER, ROWS

pytestmark = pytest.mark.integration


def _one_line_error(result: object, *needles: str) -> None:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode != 0  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_rate_must_be_a_number(fraudstream: Run) -> None:
    _one_line_error(fraudstream("produce", "--rate", "abc"), "--rate", "number")


def test_missing_csv_is_named(fraudstream: Run, tmp_path: Path) -> None:
    _one_line_error(
        fraudstream("produce", "--from-csv", str(tmp_path / "absent.csv")), "absent.csv", "no such"
    )


def test_csv_with_wrong_columns_names_them(fraudstream: Run, tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("when,card,value\n2019-01-01 00:00:00,1,2.0\n")
    _one_line_error(fraudstream("produce", "--from-csv", str(path)), "missing columns", "amt")


def test_unknown_flag_and_bad_setting(fraudstream: Run) -> None:
    _one_line_error(fraudstream("produce", "--bogus"), "--bogus")
    _one_line_error(
        fraudstream("produce", "--bootstrap-servers", "nowhere"), "kafka_bootstrap_servers"
    )


def test_produce_without_a_broker_says_how_to_get_one(fraudstream: Run) -> None:
    _one_line_error(fraudstream("produce", "--count", "1"), "stack up")


@pytest.mark.parametrize("rows", [ROWS[:2]])
def test_csv_replay_to_a_file_reports_rejected_rows(
    fraudstream: Run, tmp_path: Path, rows: list[str]
) -> None:
    source = tmp_path / "cards.csv"
    source.write_text("\n".join([HEADER, *rows, ROWS[2]]) + "\n")
    out = tmp_path / "replayed.jsonl"
    result = fraudstream("produce", "--from-csv", str(source), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert '"rejected": 1' in result.stdout
    assert '"sent": 2' in result.stdout
    assert len(out.read_text().splitlines()) == 2


def test_jsonl_round_trip_and_its_rejected_lines(fraudstream: Run, tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    made = fraudstream("produce", "--count", "5", "--seed", "1", "--out", str(first), "--json")
    assert made.returncode == 0, made.stderr
    with first.open("a") as handle:
        handle.write('{"transaction_id": "x", "amount": -1}\n\n')
    again = fraudstream("produce", "--from-jsonl", str(first), "--out", str(second), "--json")
    assert again.returncode == 0, again.stderr
    assert '"rejected": 1' in again.stdout
    assert second.read_text().splitlines() == first.read_text().splitlines()[:5]
    _one_line_error(fraudstream("produce", "--from-jsonl", str(tmp_path / "no.jsonl")),
                    "no.jsonl", "no such file")  # fmt: skip


def test_lake_commands_explain_what_is_wrong(fraudstream: Run, tmp_path: Path) -> None:
    _one_line_error(fraudstream("lake", "query", "SELECT nope FROM labels"), "query failed", "nope")
    _one_line_error(
        fraudstream("lake", "replay", "--from", "2026-03-02", "--to", "2026-03-01"), "before"
    )
    _one_line_error(fraudstream("lake", "replay", "--from", "March", "--to", "2026-03-01"),
                    "--from")  # fmt: skip
    (tmp_path / "empty").mkdir()
    _one_line_error(fraudstream("train", "--data", str(tmp_path / "empty")), "not a lake")
