"""Mapping files: a producer's own columns become transactions, attributes and labels."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from services.core.contract import InvalidEvent, Transaction
from services.core.mapping import (
    MappedFile,
    MappingError,
    infer_signals,
    load_mapping,
    read_mapping,
)
from services.core.signals import EMPTY

HEADER = "TransactionID,isFraud,TransactionDT,TransactionAmt,ProductCD,card1,addr1,P_emaildomain"
CSV = f"""{HEADER},C1,M4,Flag
7,0,86400,49.5,W,1234,315,gmail.com,1,M0,T
8,1,86460.5,120,H,1234,,,3,,F
9,0,86520,oops,W,99,200,yahoo.com,x,M1,T
"""
MAPPING = """
signals: signals.yaml
fields:
  transaction_id: TransactionID
  event_time: {column: TransactionDT, unit: s, origin: "2017-12-01T00:00:00Z"}
  card_id: {columns: [card1, addr1]}
  amount: TransactionAmt
  currency: {value: USD}
  country: {value: US}
label: isFraud
attributes: {P_emaildomain: email_domain, card1: card1, addr1: addr1}
rest: true
"""
SIGNALS = """
attributes:
  email_domain: {type: category}
  productcd: {type: category}
  card1: {type: number}
  addr1: {type: number}
  c1: {type: number}
  m4: {type: category}
  flag: {type: boolean}
"""
ORIGIN_MS = 1_512_086_400_000  # 2017-12-01T00:00:00Z


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "data.csv").write_text(CSV)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    (tmp_path / "signals.yaml").write_text(SIGNALS)
    return tmp_path


def test_any_layout_becomes_transactions_with_attributes_and_labels(files: Path) -> None:
    rows = list(load_mapping(files / "mapping.yaml").read(files / "data.csv"))
    first, second, third = rows
    assert isinstance(first.event, Transaction)
    assert isinstance(second.event, Transaction)
    assert first.event.transaction_id == "7"
    assert first.event.event_time == ORIGIN_MS + 86_400_000  # seconds from the origin
    assert second.event.event_time == ORIGIN_MS + 86_460_500
    assert (first.event.card_id, second.event.card_id) == ("1234-315", "1234-")  # assembled
    assert first.event.customer_id == first.event.card_id
    assert (first.event.merchant_id, first.event.channel) == ("unknown", "ecommerce")
    assert first.event.attributes == {
        "email_domain": "gmail.com", "productcd": "W", "card1": 1234.0, "addr1": 315.0,
        "c1": 1.0, "m4": "M0", "flag": True,
    }  # fmt: skip
    assert isinstance(second.event.attributes, dict)
    assert "email_domain" not in second.event.attributes  # empty: missing
    assert second.event.attributes["flag"] is False
    assert (first.is_fraud, second.is_fraud) == (False, True)
    assert isinstance(third.event, InvalidEvent)  # bad rows are named, never a crash
    assert third.event.field == "amount"
    assert third.line == 4


def test_an_attribute_of_the_wrong_type_names_itself(files: Path) -> None:
    (files / "data.csv").write_text(CSV.splitlines()[0] + "\n7,0,1,5,W,1,2,a.com,many,M0,T\n")
    (row,) = load_mapping(files / "mapping.yaml").read(files / "data.csv")
    assert isinstance(row.event, InvalidEvent)
    assert row.event.field == "attributes.c1"


def test_json_lines_and_gzip_read_alike(files: Path) -> None:
    with gzip.open(files / "data.csv.gz", "wt") as handle:
        handle.write(CSV)
    lines = ['{"TransactionID": 7, "isFraud": 0, "TransactionDT": 86400, "TransactionAmt": 49.5,'
             ' "ProductCD": "W", "card1": 1234, "addr1": 315, "P_emaildomain": "gmail.com",'
             ' "C1": 1, "M4": "M0", "Flag": "T"}']  # fmt: skip
    (files / "data.jsonl").write_text("\n".join(lines) + "\n")
    mapped = load_mapping(files / "mapping.yaml")
    from_csv = next(iter(mapped.read(files / "data.csv.gz"))).event
    from_json = next(iter(mapped.read(files / "data.jsonl"))).event
    assert from_csv == from_json


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.replace("  country: {value: US}\n", ""), "country: map a column"),
        (
            lambda m: m.replace("currency: {value: USD}", "currency: {value: USD, column: c}"),
            "exactly one of column, columns, value",
        ),
        (lambda m: m.replace("label: isFraud", "label: isFraud\n  colour: red"), "not YAML"),
        (lambda m: m + "fields2: {}\n", "Extra inputs"),
        (
            lambda m: m.replace("amount: TransactionAmt", "amount: TransactionAmt\n  price: x"),
            "not in the contract",
        ),
    ],
)
def test_a_bad_mapping_is_refused_with_the_problem_named(
    files: Path, change: object, problem: str
) -> None:
    (files / "mapping.yaml").write_text(change(MAPPING))  # type: ignore[operator]
    with pytest.raises(MappingError, match=r"mapping\.yaml: ") as refused:
        load_mapping(files / "mapping.yaml")
    assert problem in str(refused.value)


def test_columns_the_file_lacks_or_attributes_never_declared_are_refused(files: Path) -> None:
    (files / "signals.yaml").write_text(SIGNALS.replace("  flag: {type: boolean}\n", ""))
    with pytest.raises(MappingError, match="not declared in the signals file: flag"):
        list(load_mapping(files / "mapping.yaml").read(files / "data.csv"))
    (files / "signals.yaml").write_text(SIGNALS)
    (files / "mapping.yaml").write_text(MAPPING.replace("TransactionAmt", "Amount"))
    with pytest.raises(MappingError, match="columns not in the file: Amount"):
        list(load_mapping(files / "mapping.yaml").read(files / "data.csv"))


def test_a_signals_file_is_inferred_from_the_data(files: Path) -> None:
    inferred = infer_signals(MappedFile(read_mapping(files / "mapping.yaml"), EMPTY),
                             files / "data.csv")  # fmt: skip
    kinds = {name: a.type for name, a in inferred.attributes.items()}
    assert kinds == {"email_domain": "category", "productcd": "category", "card1": "number",
                     "addr1": "number", "c1": "category", "m4": "category",
                     "flag": "boolean"}  # fmt: skip
    assert not inferred.personal


def test_a_column_of_a_mapped_field_is_never_an_attribute_unless_named(files: Path) -> None:
    """A card number column feeds card_id: ``rest`` leaves it out of the attributes."""
    (files / "mapping.yaml").write_text(
        MAPPING.replace("card1: card1, addr1: addr1", "").replace(
            "{P_emaildomain: email_domain, }", "{P_emaildomain: email_domain}"
        )
    )
    (files / "signals.yaml").write_text(SIGNALS)
    (row, *_) = load_mapping(files / "mapping.yaml").read(files / "data.csv")
    assert isinstance(row.event, Transaction)
    assert isinstance(row.event.attributes, dict)
    assert "card1" not in row.event.attributes
    assert "addr1" not in row.event.attributes


@pytest.mark.parametrize(
    ("content", "name", "problem"),
    [
        ('{"TransactionID": 1\n', "data.jsonl", "first line is not a JSON object"),
        ("[1, 2]\n", "data.jsonl", "first line is not a JSON object"),
        (CSV.splitlines()[0] + "\n7," + "x" * 70_000 + "\n", "data.csv", "field larger than"),
    ],
)
def test_a_broken_file_is_refused_in_one_line(
    files: Path, content: str, name: str, problem: str
) -> None:
    (files / name).write_text(content)
    with pytest.raises(MappingError, match=problem):
        list(load_mapping(files / "mapping.yaml").read(files / name))


def test_hostile_values_in_rows_are_invalid_rows_never_a_crash(files: Path) -> None:
    header = CSV.splitlines()[0]
    (files / "data.csv").write_text(f"{header}\n7,0,inf,5,W,1,2,a.com,1,M0,T\n"
                                    f"8,0,nan,5,W,1,2,a.com,1e39,M0,T\n")  # fmt: skip
    rows = list(load_mapping(files / "mapping.yaml").read(files / "data.csv"))
    assert [type(r.event) for r in rows] == [InvalidEvent, InvalidEvent]


def test_two_columns_that_make_one_name_are_refused(files: Path) -> None:
    header = CSV.splitlines()[0]
    (files / "data.csv").write_text(f"{header},C1 \n")
    with pytest.raises(MappingError, match="both become attribute c1"):
        list(load_mapping(files / "mapping.yaml").read(files / "data.csv"))
