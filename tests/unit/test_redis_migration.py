"""``fraudstream redis migrate``: a v2 store moved to v3 keeps histories, labels, blocklists."""

from __future__ import annotations

import redis

from models.online import layout
from models.online.migration import migrate_v2, v3_name
from services.core.contract import Alert, Transaction, encode

T0 = 1_772_323_200_000


def _alert() -> Alert:
    tx = Transaction(
        transaction_id="t1", event_time=T0, card_id="c1", customer_id="u1", merchant_id="m1",
        merchant_category="5411", amount=5.0, currency="USD", country="US", channel="atm",
    )  # fmt: skip
    return Alert(transaction_id="t1", card_id="c1", event_time=T0, decided_at=T0, score=0.8,
                 decision="review", reasons=[], model_version="v1", transaction=tx)  # fmt: skip


def test_a_v2_store_moves_to_v3_with_its_values_and_ttls(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.set("fs:v2:{c:card-1}:state", b"\x93state", px=3_600_000)
    client.zadd("fs:v2:{c:card-1}:seen", {b"digest": 5})
    client.set("fs:v2:{c:card-1}:blocked", "t9", px=600_000)
    client.hset("fs:v2:{m:shop}:days", "f20500", 2)
    client.set("fs:v2:{m:shop}:label:t:9", "fraud", px=600_000)
    client.set("fs:v2:{t:t1}:alert", encode(_alert()), px=600_000)
    client.set("fs:v2:{m:shop}:label:z}:days", "fraud")  # only a crafted id makes such a name
    client.set(layout.blocklist_device("d1"), "newer")
    client.set("fs:v2:{d:d1}:blocked", "older")
    client.hset("fs:v2:{m:busy}:days", mapping={"n20500": 4, "f20500": 1})
    client.hset(layout.merchant_days("busy"), mapping={"n20500": 2, "n20510": 9})  # v3 since
    client.zadd("fs:v2:{c:busy}:seen", {b"old": 1})
    client.zadd(layout.card_seen("busy"), {b"new": 2})

    assert migrate_v2(client, dry_run=True).moved == 4
    assert client.exists("fs:v2:{c:card-1}:state")  # a dry run changes nothing
    done = migrate_v2(client)

    assert (done.moved, done.converted, done.merged, done.kept_newer, done.ambiguous) == (
        4, 2, 2, 1, 1)  # fmt: skip
    assert client.hgetall(layout.merchant_days("busy")) == {
        b"n20500": b"6", b"f20500": b"1", b"n20510": b"9"}  # counts added up  # fmt: skip
    assert client.zrange(layout.card_seen("busy"), 0, -1) == [b"old", b"new"]
    assert client.get(layout.card_state("card-1")) == b"\x93state"
    assert 3_500_000 < client.pttl(layout.card_state("card-1")) <= 3_600_000
    assert client.zscore(layout.card_seen("card-1"), b"digest") == 5
    assert client.get(layout.blocklist_card("card-1")) == b"t9"
    assert client.get(layout.merchant_label("shop", "t:9")) == b"0:fraud"
    context = client.get(layout.alert_context("t1"))
    assert isinstance(context, bytes)
    assert layout.AlertContext.decode(context) == layout.AlertContext.of_alert(_alert())
    assert client.get(layout.blocklist_device("d1")) == b"newer"
    assert [k for k in client.scan_iter("fs:v2:*")] == [b"fs:v2:{m:shop}:label:z}:days"]
    assert migrate_v2(client).moved == 0  # twice is once


def test_only_unambiguous_names_have_a_v3_name() -> None:
    assert v3_name("fs:v2:{c:a:b}:labels") == layout.card_labels("a:b")
    assert v3_name("fs:v2:{m:m}:label:x:y") == layout.merchant_label("m", "x:y")
    assert v3_name("fs:v2:{m:shop}:label:z}:days") is None
    assert v3_name("fs:v2:{c:x}:unknown") is None
