"""The public card-transaction CSV format maps onto the contract; bad files are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.card_csv import CsvFormatError, read_card_csv
from services.core.contract import InvalidEvent, Transaction

HEADER = (
    ",trans_date_trans_time,cc_num,merchant,category,amt,first,last,gender,street,city,state,"
    "zip,lat,long,city_pop,job,dob,trans_num,unix_time,merch_lat,merch_long,is_fraud"
)
ROWS = [
    '0,2019-01-01 00:00:18,2703186189652095,"fraud_Rippin, Kub and Mann",misc_net,4.97,Jennifer,'
    "Banks,F,561 Perry Cove,Moravian Falls,NC,28654,36.0788,-81.1781,3495,"
    '"Psychologist, counselling",1988-03-09,0b242abb623afc578575680df30655b9,1325376018,'
    "36.011293,-82.048315,0",
    "1,2019-01-01 00:00:44,630423337322,fraud_Heller Gutmann and Zieme,grocery_pos,107.23,"
    "Stephanie,Gill,F,43039 Riley Greens Suite 393,Orient,WA,99160,48.8878,-118.2105,149,"
    "Special educational needs teacher,1978-06-21,1f76529f8574734946361c461b024d99,1325376044,"
    "49.159047,-118.186462,1",
    "2,2019-01-01 00:01:00,38859492057661,fraud_Lind-Buckridge,entertainment,-5.00,Edward,"
    "Sanchez,M,594 White Dale Suite 530,Malad City,ID,83252,42.1808,-112.262,4154,"
    "Nature conservation officer,1962-01-19,a1a22d70485983eac12b5b88dad1cf95,1325376051,"
    "43.150704,-112.154481,0",
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cards.csv"
    path.write_text(text)
    return path


def test_rows_map_onto_transactions_with_labels_apart(tmp_path: Path) -> None:
    rows = list(read_card_csv(_write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")))
    first, second, third = rows
    assert isinstance(first.event, Transaction)
    assert isinstance(second.event, Transaction)
    assert first.event.transaction_id == "0b242abb623afc578575680df30655b9"
    assert first.event.event_time_ms == 1_546_300_818_000  # 2019-01-01T00:00:18Z
    assert first.event.merchant_id == "Rippin, Kub and Mann"
    assert first.event.channel == "ecommerce"
    assert second.event.channel == "card_present"
    assert second.event.merchant_category == "5411"
    assert (second.event.lat, second.event.lon) == (49.159047, -118.186462)
    assert (first.is_fraud, second.is_fraud) == (False, True)
    assert isinstance(third.event, InvalidEvent)
    assert third.event.field == "amount"
    assert third.line == 4


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(CsvFormatError, match=r"missing columns .*amt"):
        list(read_card_csv(_write(tmp_path, HEADER.replace(",amt,", ",amount,") + "\n")))


def test_empty_and_absent_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CsvFormatError, match="empty file"):
        list(read_card_csv(_write(tmp_path, "")))
    with pytest.raises(CsvFormatError, match="no such file"):
        list(read_card_csv(tmp_path / "absent.csv"))
