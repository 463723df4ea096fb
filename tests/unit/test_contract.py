"""The transaction contract: valid events round-trip, invalid ones name the failing field."""

from __future__ import annotations

import msgspec
import pytest

from services.core.contract import (
    MAX_MESSAGE_BYTES,
    Alert,
    Chargeback,
    Decision,
    Feedback,
    InvalidEvent,
    Transaction,
    decode_chargeback,
    decode_feedback,
    decode_transaction,
    encode,
)

VALID: dict[str, object] = {
    "transaction_id": "tx-1",
    "event_time": "2026-03-01T12:30:00.250+01:00",
    "card_id": "card_1",
    "customer_id": "cust_1",
    "merchant_id": "m_1",
    "merchant_category": "5411",
    "amount": 42.5,
    "currency": "EUR",
    "country": "FR",
    "channel": "card_present",
    "device_id": "dev_1",
    "ip": "192.0.2.7",
    "lat": 48.85,
    "lon": 2.35,
}


def _with(**changes: object) -> bytes:
    return msgspec.json.encode({**VALID, **changes})


def _without(field: str) -> bytes:
    return msgspec.json.encode({k: v for k, v in VALID.items() if k != field})


def test_valid_transaction_round_trips_with_event_time_in_epoch_ms() -> None:
    decoded = decode_transaction(_with())
    assert isinstance(decoded, Transaction)
    assert decoded.event_time == 1_772_364_600_250  # 11:30:00.250 UTC
    again = decode_transaction(encode(decoded))
    assert again == decoded


def test_optional_fields_may_be_absent_and_epoch_ms_is_accepted() -> None:
    raw = msgspec.json.encode(
        {k: v for k, v in VALID.items() if k not in {"device_id", "ip", "lat", "lon"}}
        | {"event_time": 1_772_364_600_250}
    )
    decoded = decode_transaction(raw)
    assert isinstance(decoded, Transaction)
    assert decoded.ip is None
    assert decoded.lat is None


INVALID: list[tuple[str, bytes, str]] = [
    ("not JSON", b"{not json", "$"),
    ("JSON array", b"[1, 2]", "$"),
    ("empty payload", b"", "$"),
    ("oversized payload", _with(device_id="x" * 100) + b" " * MAX_MESSAGE_BYTES, "$"),
    ("missing transaction_id", _without("transaction_id"), "transaction_id"),
    ("missing amount", _without("amount"), "amount"),
    ("empty transaction_id", _with(transaction_id=""), "transaction_id"),
    ("amount as string", _with(amount="12.5"), "amount"),
    ("negative amount", _with(amount=-3.0), "amount"),
    ("zero amount", _with(amount=0), "amount"),
    ("NaN amount", _with().replace(b'"amount":42.5', b'"amount":NaN'), "$"),
    ("infinite amount", _with().replace(b'"amount":42.5', b'"amount":1e999'), "amount"),
    ("unknown currency", _with(currency="ABC"), "currency"),
    ("lower-case currency", _with(currency="eur"), "currency"),
    ("unknown country", _with(country="XX"), "country"),
    ("unknown channel", _with(channel="phone"), "channel"),
    ("bad timestamp", _with(event_time="yesterday"), "event_time"),
    ("timestamp without zone", _with(event_time="2026-03-01T12:30:00"), "event_time"),
    ("epoch seconds, not ms", _with(event_time=1_772_364_600), "event_time"),
    ("boolean timestamp", _with(event_time=True), "event_time"),
    ("MCC not 4 digits", _with(merchant_category="54a1"), "merchant_category"),
    ("latitude out of range", _with(lat=91.0), "lat"),
    ("lon without lat", _with(lat=None), "lat"),
    ("bad IP", _with(ip="999.1.1.1"), "ip"),
    ("card_id wrong type", _with(card_id=12345), "card_id"),
]


@pytest.mark.parametrize(("case", "raw", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_transaction_names_the_field(case: str, raw: bytes, field: str) -> None:
    result = decode_transaction(raw)
    assert isinstance(result, InvalidEvent), case
    assert result.field == field, result.reason
    assert result.reason


def test_construction_validates_like_decoding() -> None:
    fields = msgspec.json.decode(_with(), type=dict[str, object])
    with pytest.raises(ValueError, match=r"at `\$\.currency`"):
        Transaction(**{**fields, "currency": "ABC"})  # type: ignore[arg-type]


def test_ipv6_is_accepted() -> None:
    assert isinstance(decode_transaction(_with(ip="2001:db8::1")), Transaction)


def test_decision_alert_feedback_round_trip() -> None:
    tx = decode_transaction(_with())
    assert isinstance(tx, Transaction)
    decision = Decision(
        transaction_id="tx-1", card_id="card_1", event_time=tx.event_time_ms, decided_at=1,
        score=0.9, decision="decline", reasons=["rule:blocklist"], model_version="v1",
        degraded=["redis"], latency_ms=12.5, shadow_model_version="v2", shadow_score=0.25,
        features={"amount": 42.5, "declared_signal": None},
    )  # fmt: skip
    alert = Alert(**msgspec.structs.asdict(decision), transaction=tx)
    assert msgspec.json.decode(encode(decision), type=Decision) == decision
    assert msgspec.json.decode(encode(alert), type=Alert) == alert
    feedback = decode_feedback(
        b'{"transaction_id":"tx-1","label":"fraud","analyst":"ana","time":"2026-03-01T12:00:00Z"}'
    )
    assert isinstance(feedback, Feedback)
    assert feedback.time == 1_772_366_400_000
    bad = decode_feedback(b'{"transaction_id":"tx-1","label":"maybe","analyst":"a","time":1}')
    assert isinstance(bad, InvalidEvent)
    assert bad.field == "label"


def test_decision_score_is_bounded() -> None:
    raw = b'{"transaction_id":"t","card_id":"c","event_time":1,"decided_at":1,"score":1.5,'
    raw += b'"decision":"approve","reasons":[],"model_version":"v"}'
    with pytest.raises(msgspec.ValidationError, match="score"):
        msgspec.json.decode(raw, type=Decision)


def test_a_chargeback_decodes_into_a_fraud_label_or_names_its_bad_field() -> None:
    good = (b'{"transaction_id":"tx-9","event_time":"2026-11-02T10:00:00Z",'
            b'"reason_code":"10.4","received_at":"2026-11-20T08:00:00Z"}')  # fmt: skip
    chargeback = decode_chargeback(good)
    assert isinstance(chargeback, Chargeback)
    label = chargeback.feedback()
    assert (label.label, label.analyst, label.note) == ("fraud", "chargebacks", "chargeback 10.4")
    assert (label.event_time, label.time) == (1_793_613_600_000, 1_795_161_600_000)
    bad = {
        good.replace(b"10.4", b"10 4"): "reason_code",
        good.replace(b"2026-11-20", b"2026-10-20"): "received_at",  # before the transaction
        good.replace(b"tx-9", b"tx\\u0007"): "transaction_id",
        good.replace(b'"received_at":"2026-11-20T08:00:00Z"', b'"x":1'): "received_at",
    }
    for raw, field in bad.items():
        decoded = decode_chargeback(raw)
        assert isinstance(decoded, InvalidEvent), raw
        assert decoded.field == field, (raw, decoded)
