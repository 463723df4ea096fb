"""A producer's own data set, plugged in with a mapping and a signals file and no code: the
commands a user runs, end to end."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from tests.conftest import Run

pytestmark = pytest.mark.integration

COLUMNS = ("TransactionID", "isFraud", "TransactionDT", "TransactionAmt", "ProductCD", "card1",
           "card4", "addr1", "P_emaildomain", "C1", "D1", "M4", "DeviceInfo")  # fmt: skip
MAPPING = """
signals: signals.yaml
fields:
  transaction_id: TransactionID
  event_time: {column: TransactionDT, unit: s, origin: "2017-12-01T00:00:00Z"}
  card_id: {columns: [card1, card4, addr1]}
  amount: TransactionAmt
  currency: {value: USD}
  country: {value: US}
  device_id: DeviceInfo
label: isFraud
attributes: {card1: card1, addr1: addr1}
rest: true
"""
ENTITIES = """entities:
  - by: [p_emaildomain]
  - by: [device_id]
  - by: [card1, p_emaildomain]
"""


def write_producer_csv(path: Path, rows: int, first_id: int, start_s: int, seed: int) -> None:
    """Columns of an e-commerce data set as a producer exports them: seconds from an
    arbitrary origin, codes, counters, missing values; fraud from a ring of devices and a
    bad e-mail provider, which only the attributes and entity windows show."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(COLUMNS)
        for i in range(rows):
            ring = rng.random() < 0.02
            domains = ["gmail.com", "yahoo.com", "outlook.com", "", "aol.com", "fastmail.bad"]
            domain = "fastmail.bad" if ring and rng.random() < 0.7 else rng.choice(domains)
            device = f"ring-{rng.randrange(3)}" if ring else rng.choice(
                ["Windows", "iOS Device", "MacOS", "", f"SM-{rng.randrange(300)}"])  # fmt: skip
            out.writerow([
                first_id + i, int(ring), start_s + i * 30 + rng.randrange(30),
                round(rng.lognormvariate(3.5, 1.0) * (3 if ring else 1), 2),
                rng.choice("WHCSR"), rng.randrange(1000, 1400), rng.choice(["visa", "mastercard"]),
                rng.choice(["315", "204", ""]), domain, rng.randrange(0, 9) if rng.random() < 0.9
                else "", round(rng.uniform(0, 600), 1) if rng.random() < 0.7 else "",
                rng.choice(["M0", "M1", "M2", ""]), device,
            ])  # fmt: skip


def _json(result: object) -> dict[str, object]:
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    loaded: dict[str, object] = json.loads(result.stdout)  # type: ignore[attr-defined]
    return loaded


def test_a_new_data_set_plugs_in_through_a_mapping_and_a_signals_file(
    fraudstream: Run, tmp_path: Path
) -> None:
    earlier, later = tmp_path / "earlier.csv", tmp_path / "later.csv"
    write_producer_csv(earlier, 12_000, 1, 86_400, seed=1)
    write_producer_csv(later, 3_000, 20_001, 86_400 + 12_000 * 30, seed=2)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    inferred = fraudstream("signals", "infer", str(earlier), "--mapping", "mapping.yaml")
    assert inferred.returncode == 0, inferred.stderr
    assert "p_emaildomain:\n    type: category" in inferred.stdout
    assert "c1:\n    type: number" in inferred.stdout
    (tmp_path / "signals.yaml").write_text(inferred.stdout + ENTITIES)
    checked = fraudstream("signals", "check", "signals.yaml")
    assert checked.returncode == 0, checked.stderr
    assert "3 entities" in checked.stdout

    registry = str(tmp_path / "registry")
    trained = _json(fraudstream("train", "--data", str(earlier), "--mapping", "mapping.yaml",
                                "--registry", registry, "--json", timeout=600))  # fmt: skip
    names = trained["feature_names"]
    assert isinstance(names, list)
    assert "attr_p_emaildomain" in names
    assert "ent_device_id_cards_24h" in names
    assert trained["signals"]["entities"][0]["by"] == ["p_emaildomain"]  # type: ignore[index]
    evaluated = _json(fraudstream(
        "models", "evaluate", str(trained["version"]), "--data", str(later), "--history",
        str(earlier), "--mapping", "mapping.yaml", "--registry", registry, "--json", timeout=600,
    ))  # fmt: skip
    assert evaluated["rows"] == 3_000  # every later row, the earlier ones as history
    assert float(evaluated["pr_auc"]) > 0.5  # type: ignore[arg-type]

    out = tmp_path / "replay.jsonl"
    produced = _json(fraudstream("produce", "--from-csv", str(later), "--mapping",
                                 "mapping.yaml", "--out", str(out), "--json"))  # fmt: skip
    assert produced["sent"] == 3_000
    first = json.loads(out.read_text().splitlines()[0])
    assert first["attributes"]["card1"] == float(first["card_id"].split("-")[0])
    labels = (tmp_path / "replay.labels.csv").read_text().splitlines()
    assert len(labels) == 3_001


def test_an_undeclared_column_is_refused_in_one_line_naming_it(
    fraudstream: Run, tmp_path: Path
) -> None:
    write_producer_csv(tmp_path / "data.csv", 100, 1, 86_400, seed=3)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    (tmp_path / "signals.yaml").write_text("attributes: {c1: {type: number}}\n")
    for command in (("train", "--data", "data.csv"),
                    ("produce", "--from-csv", "data.csv", "--out", "x.jsonl")):  # fmt: skip
        refused = fraudstream(*command, "--mapping", "mapping.yaml")
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, refused.stderr
        assert "not declared in the signals file: addr1" in lines[0]
