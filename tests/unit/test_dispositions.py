"""Analysts' dispositions in Redis: the latest label wins, for counts and blocklists alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis
import redis.asyncio

from models.online import layout
from models.online.layout import AlertContext
from models.online.ops import is_transient
from services.core.contract import Alert, Feedback, Label, Transaction, encode
from stream_jobs.feedback.dispositions import Applied, Dispositions, Parked

T0 = 1_772_323_200_000
DAY = f"f{T0 // 86_400_000}"
_T = TypeVar("_T")


def _alert(transaction_id: str, merchant: str = "m1") -> Alert:
    tx = Transaction(
        transaction_id=transaction_id, event_time=T0, card_id="c1", customer_id="u1",
        merchant_id=merchant, merchant_category="5411", amount=20.0, currency="USD",
        country="US", channel="ecommerce", device_id="d1",
    )  # fmt: skip
    return Alert(
        transaction_id=transaction_id, card_id="c1", event_time=T0, decided_at=T0, score=0.9,
        decision="review", reasons=[], model_version="v1", transaction=tx,
    )  # fmt: skip


def _run(redis_url: str, body: Callable[[Dispositions, redis.Redis], Awaitable[_T]]) -> _T:
    """``body`` against a fresh database, with the alerts of t1 and t2 remembered."""
    sync = redis.Redis.from_url(redis_url)
    sync.flushdb()

    async def main() -> _T:
        client = redis.asyncio.Redis.from_url(redis_url)
        dispositions = Dispositions(client, blocklist_ttl_ms=3_600_000, alert_ttl_ms=60_000)
        for transaction_id in ("t1", "t2"):
            assert await dispositions.remember(encode(_alert(transaction_id))) == transaction_id
        try:
            return await body(dispositions, sync)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def _label(dispositions: Dispositions, tx: str, label: Label, at: int = T0) -> Applied:
    context = await dispositions.context(tx)
    assert context is not None
    feedback = Feedback(transaction_id=tx, label=label, analyst="a1", time=at)
    return await dispositions.apply(feedback, context)


def test_a_legit_after_a_fraud_takes_back_the_count_and_lifts_the_blocklist(
    redis_url: str,
) -> None:
    async def body(d: Dispositions, client: redis.Redis) -> None:
        frauds = layout.merchant_days("m1"), DAY
        assert (await _label(d, "t1", "fraud")).changed
        assert not (await _label(d, "t1", "fraud")).changed  # a repeat changes nothing
        assert client.hget(*frauds) == b"1"
        assert client.get(layout.blocklist_card("c1")) == b"t1"
        assert client.get(layout.blocklist_device("d1")) == b"t1"
        assert (await _label(d, "t1", "legit", T0 + 1)).changed
        assert client.hget(*frauds) == b"0"
        assert client.exists(layout.blocklist_card("c1"), layout.blocklist_device("d1")) == 0
        assert client.hget(layout.card_labels("c1"), "t1") == b"legit"

    _run(redis_url, body)


def test_a_legit_lifts_only_the_entries_its_own_transaction_created(redis_url: str) -> None:
    async def body(d: Dispositions, client: redis.Redis) -> None:
        await _label(d, "t2", "fraud")
        await _label(d, "t1", "fraud")  # the card is already blocked: by t2
        await _label(d, "t1", "legit", T0 + 1)
        assert client.get(layout.blocklist_card("c1")) == b"t2"
        assert client.hget(layout.merchant_days("m1"), DAY) == b"1"

    _run(redis_url, body)


def test_the_latest_disposition_by_time_wins_whatever_order_they_are_applied_in(
    redis_url: str,
) -> None:
    """A parked disposition applied after a newer one must not undo it."""

    async def body(d: Dispositions, client: redis.Redis) -> None:
        assert (await _label(d, "t1", "fraud", T0 + 5_000)).changed
        older = await _label(d, "t1", "legit", T0)
        assert not older.changed
        assert client.get(layout.blocklist_card("c1")) == b"t1"
        assert client.hget(layout.card_labels("c1"), "t1") == b"fraud"
        assert client.hget(layout.merchant_days("m1"), DAY) == b"1"

    _run(redis_url, body)


def test_a_disposition_dated_in_the_future_does_not_outrank_later_corrections(
    redis_url: str,
) -> None:
    async def body(d: Dispositions, client: redis.Redis) -> None:
        await _label(d, "t1", "fraud", 4_070_908_800_000)  # 2099
        assert (await _label(d, "t1", "legit", int(time.time() * 1000) + 600_000)).changed

    _run(redis_url, body)


def test_a_crafted_transaction_id_is_labelled_like_any_other(redis_url: str) -> None:
    """On cdc8e54 ``fraud`` on a transaction ``z}:days`` at merchant ``shop}:label:z`` hit the
    merchant's counts with WRONGTYPE and was retried for ever, holding back every other one."""

    async def body(d: Dispositions, client: redis.Redis) -> None:
        assert await d.remember(encode(_alert("z}:days", merchant="shop"))) == "z}:days"
        assert await d.remember(encode(_alert("x", merchant="shop}:label:z"))) == "x"
        assert (await _label(d, "z}:days", "fraud")).changed
        assert (await _label(d, "x", "fraud")).changed
        assert client.hget(layout.merchant_days("shop"), DAY) == b"1"
        assert client.hget(layout.merchant_days("shop}:label:z"), DAY) == b"1"

    _run(redis_url, body)


def test_a_wrong_type_in_redis_is_an_error_that_would_recur(redis_url: str) -> None:
    async def body(d: Dispositions, client: redis.Redis) -> None:
        client.set(layout.card_labels("c1"), "not a hash")
        with pytest.raises(redis.ResponseError) as raised:
            await _label(d, "t1", "fraud")
        assert not is_transient(raised.value)  # a dead letter, not an outage to wait out

    _run(redis_url, body)


def test_parked_dispositions_wait_in_order_and_leave_the_index_once_unparked(
    redis_url: str,
) -> None:
    async def body(d: Dispositions, client: redis.Redis) -> None:
        for i, raw in enumerate((b"first", b"second")):
            await d.park("t9", Parked(0, i, raw, T0), 60_000)
        assert [p.raw for p in await d.parked("t9")] == [b"first", b"second"]
        assert await d.due(T0 + 1, 10) == ["t9"]
        await d.look_again("t9", T0 + 5_000)
        assert await d.due(T0 + 1, 10) == []  # not yet due
        await d.unpark("t9", 1)
        assert [p.raw for p in await d.parked("t9")] == [b"second"]
        assert await d.waiting_count() == 1  # still one left: still waiting
        await d.unpark("t9", 1)
        assert (await d.waiting_count(), client.exists(layout.parked("t9"))) == (0, 0)

    _run(redis_url, body)


def test_an_alert_keeps_only_what_its_dispositions_need(redis_url: str) -> None:
    async def body(d: Dispositions, client: redis.Redis) -> None:
        alert = _alert("t3")
        await d.remember(encode(alert))
        stored = client.get(layout.alert_context("t3"))
        assert stored is not None
        assert len(stored) < len(encode(alert)) // 3
        assert await d.context("t3") == AlertContext.of_alert(alert)
        assert 0 < client.pttl(layout.alert_context("t3")) <= 60_000  # the configured time

    _run(redis_url, body)
