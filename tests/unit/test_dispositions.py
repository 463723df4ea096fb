"""Analysts' dispositions in Redis: the latest label wins, for counts and blocklists alike."""

from __future__ import annotations

import redis

from models import redis_layout as layout
from services.core.contract import Alert, Feedback, Transaction, encode
from stream_jobs.feedback.dispositions import Applied, Dispositions

T0 = 1_772_323_200_000


def _alert(transaction_id: str) -> Alert:
    tx = Transaction(
        transaction_id=transaction_id, event_time=T0, card_id="c1", customer_id="u1",
        merchant_id="m1", merchant_category="5411", amount=20.0, currency="USD", country="US",
        channel="ecommerce", device_id="d1",
    )  # fmt: skip
    return Alert(
        transaction_id=transaction_id, card_id="c1", event_time=T0, decided_at=T0, score=0.9,
        decision="review", reasons=[], model_version="v1", transaction=tx,
    )  # fmt: skip


def _label(dispositions: Dispositions, transaction_id: str, label: str) -> Applied:
    feedback = Feedback(transaction_id=transaction_id, label=label, analyst="a1", time=T0)  # type: ignore[arg-type]
    applied = dispositions.apply(encode(feedback))
    assert isinstance(applied, Applied)
    return applied


def _setup(redis_url: str) -> tuple[redis.Redis, Dispositions]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    dispositions = Dispositions(client, blocklist_ttl_ms=3_600_000)
    for transaction_id in ("t1", "t2"):
        assert dispositions.remember(encode(_alert(transaction_id)))
    return client, dispositions


def test_a_legit_after_a_fraud_takes_back_the_count_and_lifts_the_blocklist(
    redis_url: str,
) -> None:
    client, dispositions = _setup(redis_url)
    frauds = layout.merchant_days("m1"), f"f{T0 // 86_400_000}"
    assert _label(dispositions, "t1", "fraud").first
    assert not _label(dispositions, "t1", "fraud").first  # a repeat changes nothing
    assert client.hget(*frauds) == b"1"
    assert client.get(layout.blocklist_card("c1")) == b"t1"
    assert client.get(layout.blocklist_device("d1")) == b"t1"
    assert _label(dispositions, "t1", "legit").first
    assert client.hget(*frauds) == b"0"
    assert client.exists(layout.blocklist_card("c1"), layout.blocklist_device("d1")) == 0
    assert client.hget(layout.card_labels("c1"), "t1") == b"legit"


def test_a_legit_lifts_only_the_entries_its_own_transaction_created(redis_url: str) -> None:
    client, dispositions = _setup(redis_url)
    _label(dispositions, "t2", "fraud")
    _label(dispositions, "t1", "fraud")  # the card is already blocked: by t2
    _label(dispositions, "t1", "legit")
    assert client.get(layout.blocklist_card("c1")) == b"t2"
    assert client.hget(layout.merchant_days("m1"), f"f{T0 // 86_400_000}") == b"1"
