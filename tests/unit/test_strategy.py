"""The strategy document: the shipped default decides exactly as the Python rules did, bad and
hostile documents are refused with their reasons, and a rule failing at run time never fires."""

from __future__ import annotations

from typing import Final

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from models.features import definitions as f
from services.core.contract import Transaction
from services.core.signals import EMPTY, parse_signals
from stream_jobs import rules
from stream_jobs import strategy as st

TX = Transaction(
    transaction_id="t1",
    event_time=1_772_323_200_000,
    card_id="c1",
    customer_id="u1",
    merchant_id="m1",
    merchant_category="5411",
    amount=25.0,
    currency="USD",
    country="US",
    channel="card_present",
    device_id="d1",
)

# The Python rules the default document replaced (cdc8e54's stream_jobs/rules.py), as the oracle.
_LIMITS: Final = {
    "7995": 2_000.0,
    "4829": 2_500.0,
    "6051": 2_500.0,
    "6011": 1_000.0,
    "5944": 5_000.0,
    "5732": 4_000.0,
    "5816": 500.0,
    "5815": 300.0,
    "5411": 1_500.0,
    "5541": 500.0,
    "5812": 1_000.0,
    "5814": 300.0,
}


def _python_rules(tx: Transaction, row: list[float]) -> list[tuple[str, str]]:
    value = dict(zip(f.FEATURE_NAMES, row, strict=True))
    fired = []
    if value["amount_usd"] > _LIMITS.get(tx.merchant_category, 10_000.0):
        fired.append(("rule:amount_limit", "review"))
    if value["speed_from_prev_kmh"] > 1_000.0 and value["distance_from_prev_km"] > 500.0:
        fired.append(("rule:impossible_travel", "review"))
    if value["tiny_count_10m"] >= 5:
        fired.append(("rule:card_testing", "review"))
    return fired


def _row(**values: float) -> list[float]:
    base = dict.fromkeys(f.FEATURE_NAMES, 0.0) | {"amount_usd": 25.0}
    return [(base | values)[name] for name in f.FEATURE_NAMES]


DEFAULT = st.Compiled(st.default())
_MCC = hs.sampled_from([*_LIMITS, "0000", "5999"])
_EDGES = hs.sampled_from(
    [
        0.0,
        299.99,
        300.0,
        300.01,
        499.0,
        500.0,
        500.5,
        1_000.0,
        1_000.01,
        1_500.0,
        1_500.01,
        2_000.0,
        10_000.0,
        10_000.01,
        1e6,
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    mcc=_MCC,
    amount=hs.one_of(_EDGES, hs.floats(0, 20_000)),
    speed=_EDGES,
    distance=_EDGES,
    tiny=hs.sampled_from([0.0, 3.0, 4.0, 4.99, 5.0, 6.0, 64.0]),
)
def test_the_default_document_fires_exactly_like_the_python_rules(
    mcc: str, amount: float, speed: float, distance: float, tiny: float
) -> None:
    tx = msgspec.structs.replace(TX, merchant_category=mcc)
    row = _row(
        amount_usd=amount,
        speed_from_prev_kmh=speed,
        distance_from_prev_km=distance,
        tiny_count_10m=tiny,
    )
    fired = DEFAULT.evaluate(row, tx, score=None, probability=None)
    assert fired.active == _python_rules(tx, row)
    assert fired.shadow == fired.errors == []


def test_a_quiet_event_fires_nothing_and_each_rule_fires_on_its_own() -> None:
    assert DEFAULT.evaluate(_row(), TX, None, None).active == []
    travel = _row(speed_from_prev_kmh=5_000.0, distance_from_prev_km=3_000.0)
    assert DEFAULT.evaluate(travel, TX, None, None).active == [("rule:impossible_travel", "review")]
    short_hop = _row(speed_from_prev_kmh=5_000.0, distance_from_prev_km=10.0)
    assert DEFAULT.evaluate(short_hop, TX, None, None).active == []


def _problems(text: str, signals_text: str = "") -> list[str]:
    signals = parse_signals(signals_text) if signals_text else EMPTY
    return st.check(st.parse(text), signals)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("amount_usd * 2 > 100.0", "fails on a typical row: TypeError"),
        ("foo > 1.0", "unknown names foo"),
        ("amount_usd", "gives float on a typical row, not a boolean"),
        ("amount_usd > 1.0 &&", "does not compile"),
        ("1 / 0 == 1", "ZeroDivisionError"),
        ("attributes.three_ds == 'failed'", "fails on an all-zero row"),  # guard with has()
        ("ent_email_domain_count_24h > 3.0", "fails on a row without optional signals"),  # a null
    ],
)
def test_an_invalid_rule_is_refused_with_its_reason(when: str, expected: str) -> None:
    signals = (
        "attributes: {three_ds: {type: category}, email_domain: {type: category}}\n"
        "entities: [{by: [email_domain]}]"
    )
    problems = _problems(f"rules: [{{id: r, when: {when!r}, outcome: review}}]", signals)
    assert len(problems) == 1, problems
    assert problems[0].startswith("rule r: ")
    assert expected in problems[0]


def test_guarded_rules_over_attributes_entities_lists_and_the_model_pass() -> None:
    signals = (
        "attributes: {three_ds: {type: category}, email_domain: {type: category}}\n"
        "entities: [{by: [email_domain]}]"
    )
    document = """
tables: {risky: [NG, RU], limits: {"5411": 100.0}}
rules:
  - {id: a, when: "has(attributes.three_ds) && attributes.three_ds == 'failed'", outcome: review}
  - {id: b, when: "ent_email_domain_count_24h != null && ent_email_domain_count_24h > 3.0",
     outcome: decline}
  - {id: c, when: "country in risky && amount_usd > 10.0", outcome: review}
  - {id: d, when: "probability > 0.9 && amount_usd > limits[merchant_category]",
     outcome: review, state: shadow}
  - {id: e, when: "device_id == null", outcome: review, state: paused}
"""
    assert _problems(document, signals) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules: [{id: r, when: '" + "(" * 40 + "1" + ")" * 40 + " > 0', outcome: review}]",
            "nested deeper than 32",
        ),
        (
            "rules: [{id: r, when: '" + "1 + " * 1_100 + "1 > 0', outcome: review}]",
            "longer than 4096 characters",
        ),
        ("rules: [{id: r, when: '" + "x" * (1 << 20) + "', outcome: review}]", "larger than"),
        ("tables: {big: [" + ", ".join(f"'{i}'" for i in range(50_001)) + "]}", "larger than"),
        (
            "tables: {t1: {"
            + ", ".join(f"'{i}': 1" for i in range(30_000))
            + "}, t2: {"
            + ", ".join(f"'{i}': 1" for i in range(30_000))
            + "}}",
            "larger than",
        ),
        ("rules: [{id: r, when: 'true', outcome: approve}]", "outcome"),
        ("rules: [{id: R!, when: 'true', outcome: review}]", "lower case letters, digits and _"),
        (
            "rules: [{id: r, when: 'true', outcome: review, reason: blocklist_card}]",
            "names a fraud disposition's block",
        ),
        (
            "rules: [{id: r, when: 'true', outcome: review, reason: '" + "x" * 70 + "'}]",
            "64 at most",
        ),
        (
            "rules: [{id: a, when: 'true', outcome: review, reason: same},"
            " {id: b, when: 'true', outcome: review, reason: same}]",
            "rule reasons repeat",
        ),
        (
            "rules: [{id: r, when: '[1, 2].exists(x, x > 1)', outcome: review}]",
            "comprehensions (all, exists, exists_one, map, filter) are not allowed",
        ),
        (
            "rules: [{id: r, outcome: review,"
            " when: 'amount > 5000.0 && [0, 0].map(a, [0, 0].map(b, a + b)).size() > 0'}]",
            "comprehensions",
        ),
        (f"version: {2**64}", "less than or equal to 2147483647"),
        ("description: '" + "d" * 1_001 + "'", "at most 1000 characters"),
        ("tables: {t: {k: '" + "v" * 129 + "'}}", "longer than 128"),
        (
            "rules: [{id: r, when: 'true', outcome: review},"
            " {id: r, when: 'true', outcome: review}]",
            "rule ids repeat",
        ),
        ("effective_from: 1990-01-01T00:00:00Z", "effective_from"),
        ("a: " * 5_000 + "1", "not YAML"),
        ("[" * 10_000, "nested too deeply"),
    ],
)
def test_a_hostile_or_malformed_document_is_refused(text: str, expected: str) -> None:
    with pytest.raises(st.StrategyError) as refused:
        st.parse(text)
    assert expected in str(refused.value)
    assert len(str(refused.value)) < 2_000  # one clear line, never the document back


def test_a_table_of_too_many_entries_is_refused_below_the_file_bound() -> None:
    tables = {f"t{i}": [str(j) for j in range(600)] for i in range(90)}  # 54,000 entries
    with pytest.raises(ValueError, match="entries over all tables"):
        st.Strategy.model_validate({"tables": tables})


def test_a_rule_failing_at_run_time_does_not_fire_and_is_reported() -> None:
    """The samples cannot foresee every value: an integer division by zero passes them."""
    compiled = st.Compiled(
        st.parse("""
rules:
  - {id: ratio, when: "int(amount_usd) / int(amount - 25.0) > 1", outcome: decline}
  - {id: big, when: "amount_usd > 50.0", outcome: review}
  - {id: quiet, when: "amount_usd > 50.0", outcome: review, state: shadow}
  - {id: dormant, when: "amount_usd > 50.0", outcome: decline, state: paused}
""")
    )
    fired = compiled.evaluate(_row(amount_usd=200.0), TX, None, None)  # TX.amount is 25
    assert fired.errors == ["rule:ratio"]
    assert fired.active == [("rule:big", "review")]
    assert fired.shadow == ["rule:quiet"]
    control = msgspec.structs.replace(TX, amount=30.0)
    fired = compiled.evaluate(_row(amount_usd=200.0), control, None, None)
    assert fired.errors == []
    assert fired.active == [("rule:ratio", "decline"), ("rule:big", "review")]


def test_a_rule_on_the_model_is_not_evaluated_without_one() -> None:
    compiled = st.Compiled(st.parse("rules: [{id: m, when: 'probability > 0.5', outcome: review}]"))
    assert compiled.evaluate(_row(), TX, None, None).active == []
    assert compiled.evaluate(_row(), TX, 0.9, 0.8).active == [("rule:m", "review")]
    assert compiled.evaluate(_row(), TX, 0.9, 0.2).active == []


def test_the_diff_names_what_changed() -> None:
    old = st.default()
    new = st.parse(
        st.DEFAULT_FILE.read_text()
        .replace("tiny_count_10m >= 5.0", "tiny_count_10m >= 4.0")
        .replace("review_cost_usd: 5.0", "review_cost_usd: 7.5")
    )
    assert st.diff(old, new) == [
        "~ rule card_testing.when: 'tiny_count_10m >= 5.0' -> 'tiny_count_10m >= 4.0'",
        "~ thresholds.review_cost_usd: 5.0 -> 7.5",
    ]
    assert st.diff(old, old) == []


def test_model_thresholds_and_combination() -> None:
    assert rules.model_outcome(0.01, 0.1, 0.5) == "approve"
    assert rules.model_outcome(0.1, 0.1, 0.5) == "review"
    assert rules.model_outcome(0.7, 0.1, 0.5) == "decline"
    assert rules.combine("decline", [("rule:amount_limit", "review")]) == "decline"
    assert rules.combine("approve", [("rule:card_testing", "review")]) == "review"
    assert rules.combine("review", []) == "review"


def test_a_rule_giving_no_boolean_at_run_time_is_an_error_not_a_silence() -> None:
    compiled = st.Compiled(
        st.parse(
            "rules: [{id: odd, when: 'amount > 5000.0 ? amount > 9000.0 : false', outcome: review}]"
        )
    )
    assert compiled.evaluate(
        _row(), msgspec.structs.replace(TX, amount=9_500.0), None, None
    ).active == [("rule:odd", "review")]
    bad = st.Strategy.model_validate(
        {"rules": [{"id": "odd", "outcome": "review", "when": "amount > 5000.0 ? 'yes' : false"}]}
    )
    assert st.check(bad) == []  # the samples never reach the string branch
    fired = st.Compiled(bad).evaluate(
        _row(), msgspec.structs.replace(TX, amount=9_000.0), None, None
    )
    assert (fired.active, fired.errors) == ([], ["rule:odd"])


def test_tables_cost_nothing_to_rules_that_do_not_read_them_and_lists_are_lookups() -> None:
    """The tables sit in the context once; a list table is a map: ``in`` is one lookup."""
    document = st.Strategy.model_validate(
        {
            "tables": {"big": [str(i) for i in range(40_000)]},
            "rules": [
                {"id": "member", "when": "merchant_id in big", "outcome": "review"},
                {"id": "other", "when": "amount_usd > 10.0", "outcome": "review"},
            ],
        }
    )
    compiled = st.Compiled(document)
    inside = msgspec.structs.replace(TX, merchant_id="39999")
    quiet = _row(amount_usd=5.0)
    assert compiled.evaluate(quiet, inside, None, None).active == [("rule:member", "review")]
    assert compiled.evaluate(_row(amount_usd=50.0), TX, None, None).active == [
        ("rule:other", "review")
    ]


def test_the_default_thresholds_are_the_shipped_ones() -> None:
    """A document that leaves ``thresholds`` out decides as the shipped one does."""
    assert st.parse("rules: []").thresholds == st.default().thresholds


def _version(n: int, restores: int | None = None, replaces: int | None = None) -> st.Strategy:
    return st.Strategy(version=n, restores=restores, replaces=replaces)


def test_each_rollback_steps_further_back() -> None:
    v0, v1, v2 = _version(0), _version(1), _version(2)  # v2: the bad one
    assert st.rollback_target([v0, v1, v2], v2) == 1
    v3 = _version(3, restores=1, replaces=2)
    assert st.rollback_target([v0, v1, v2, v3], v3) == 0  # never v2 again, nor v1
    v4 = _version(4, restores=0, replaces=3)
    with pytest.raises(st.StrategyError, match="no earlier version"):
        st.rollback_target([v0, v1, v2, v3, v4], v4)
