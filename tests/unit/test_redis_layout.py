"""``models.online.layout``: no id can pose as part of another key, and a card keeps one slot."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from models.online import layout

_ids = st.text(alphabet=st.sampled_from("ab{}:%%7BD3A"), min_size=1, max_size=12)


def test_a_crafted_transaction_id_cannot_name_a_merchants_day_counts() -> None:
    """Once equal: a ``fraud`` label on the crafted transaction hit the merchant's hash."""
    assert layout.merchant_label("shop", "z}:days") != layout.merchant_days("shop}:label:z")


def _named(x: str, y: str) -> dict[str, tuple[str, str, str]]:
    """Every key the layout makes of the ids ``x`` and ``y``, and what it was made of."""
    single = (layout.card_state, layout.card_seen, layout.card_recent, layout.card_labels,
              layout.blocklist_card, layout.blocklist_device, layout.merchant_days,
              layout.alert_context)  # fmt: skip
    named = {key(x): (key.__name__, x, "") for key in single}
    named[layout.merchant_label(x, y)] = ("merchant_label", x, y)
    return named


@given(_ids, _ids, _ids, _ids)
def test_a_key_names_exactly_one_thing(a: str, b: str, c: str, d: str) -> None:
    first, second = _named(a, b), _named(c, d)
    assert len(first) == 9  # no two functions give the same key for the same ids
    for key in first.keys() & second.keys():
        assert first[key] == second[key]  # the same key: the same function and ids


@given(_ids)
def test_every_key_of_a_card_is_in_one_slot_tagged_by_the_escaped_id(card: str) -> None:
    keys = layout.card_keys(card)
    assert len({key_slot(k.encode()) for k in keys}) == 1
    for key in keys:
        tag = key[key.index("{") + 1 : key.index("}")]
        assert tag == "c:" + layout.escape(card)


def test_outages_are_told_from_errors_that_would_recur() -> None:
    """redis-py parses replies into classes and strips their code: an OOM or a failover's
    READONLY once looked like the record's own error, and every record became a dead letter."""
    from redis._parsers.base import BaseParser

    from models.online.ops import is_transient

    def parsed(reply: str) -> BaseException:
        return BaseParser.parse_error(reply)  # type: ignore[no-any-return,no-untyped-call]

    for outage in ("OOM command not allowed when used memory > 'maxmemory'.",
                   "READONLY You can't write against a read only replica.",
                   "MASTERDOWN Link with MASTER is down", "CLUSTERDOWN The cluster is down",
                   "TRYAGAIN Multiple keys request during rehashing of slot",
                   "LOADING Redis is loading the dataset in memory",
                   "BUSY Redis is busy running a script",
                   "ERR Error running script (call to f_x): @user_script:9: -OOM command not "
                   "allowed when used memory > 'maxmemory'."):  # fmt: skip
        assert is_transient(parsed(outage)), outage
    for recurring in ("WRONGTYPE Operation against a key holding the wrong kind of value",
                      "ERR Error running script (call to f_x): @user_script:3: WRONGTYPE "
                      "Operation against a key holding the wrong kind of value"):  # fmt: skip
        assert not is_transient(parsed(recurring)), recurring
