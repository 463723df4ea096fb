"""The backtest's HTML report: one self-contained page (no network, no script), its four
charts real PNGs, every string of the result escaped, undefined numbers shown as a dash."""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from stream_jobs.backtest_report import DASH, render

HOSTILE: Final = "<script>alert(1)</script>"
ESCAPED: Final = "&lt;script&gt;alert(1)&lt;/script&gt;"
IMAGE: Final = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _strategy(name: str, version: int, scale: float) -> dict[str, Any]:
    """One strategy's part of a result; ``scale`` makes the two strategies differ."""
    rules = [
        {"id": "amount_limit", "code": "rule:amount_limit", "state": "active",
         "description": "Above the category's single-transaction limit", "outcome": "review",
         "fires": 120, "fire_rate": 0.0012, "distinct_cards": 90, "usd_flagged": 250_000.0,
         "fraud_caught": 30, "fraud_caught_usd": 60_000.0, "false_positives": 70,
         "precision": 0.3, "net_usd": 12_500.0},
        {"id": "night_owl", "code": "rule:night_owl", "state": "shadow",
         "description": HOSTILE, "outcome": "decline", "fires": 4, "fire_rate": 0.00004,
         "distinct_cards": 4, "usd_flagged": 800.0, "fraud_caught": 0,
         "fraud_caught_usd": 0.0, "false_positives": 0, "precision": None, "net_usd": -20.0},
        {"id": "model", "code": "model", "state": "model", "description": "The model's score",
         "outcome": "model", "fires": int(400 * scale), "fire_rate": 0.004 * scale,
         "distinct_cards": 350, "usd_flagged": 900_000.0, "fraud_caught": int(500 * scale),
         "fraud_caught_usd": 1_200_000.0, "false_positives": 300, "precision": 0.62,
         "net_usd": 700_000.0},
    ]  # fmt: skip
    days = [f"2018-07-{d:02d}" for d in range(1, 8)]
    per_day = [{"day": d, "alerts": int(scale * (400 + 60 * i)), "reviews": 300, "declines": 100}
               for i, d in enumerate(days)]  # fmt: skip
    return {
        "name": name, "version": version, "thresholds": {"mode": "cost", "review_cost_usd": 5.0},
        "summary": {
            "events": 100_000, "alerts": 3_200, "reviews": 2_500, "declines": 700,
            "alert_rate": 0.032, "alerts_per_day_mean": 457.1, "alerts_per_day_max": 760,
            "days_over_budget": 3, "distinct_cards": 2_900, "usd_flagged": 1_234_567.0,
            "fraud_caught": int(520 * scale), "fraud_caught_usd": 1_260_000.0,
            "fraud_total": 800, "fraud_total_usd": 2_000_000.0, "precision": 0.4 * scale,
            "recall": 0.6 * scale, "net_usd": 650_000.0 * scale,
        },
        "rules": rules,
        "alerts_per_day": per_day,
        "alerts_by_hour": [10.0 + h for h in range(24)],
    }  # fmt: skip


def _result(*, against: bool = False, curve: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {
        "range": {"from": "2018-07-01", "to": "2018-07-08", "days": 7},
        "data": {"source": "fdh.csv.gz", "events": 100_000, "history_events": 900_000},
        "model": {"version": "v0001", "calibrated": False},
        "labels": {"fraud": 800, "legit": 98_000, "assumed_legit": 0,
                   "unknown_immature": 1_200, "unknown_declined": 0, "unknown_share": 0.012},
        "budget": 500,
        "strategies": {"strategy": _strategy("strategy.yaml", 3, 1.0)},
        "threshold_curve": [
            {"threshold": t / 10, "precision": None if t == 9 else 0.2 + t / 15,
             "recall": 1 - t / 10, "alerts_per_day": 2_000.0 / t}
            for t in range(1, 10)
        ] if curve else [],
        "score_histogram": {
            "edges": [i / 20 for i in range(21)],
            "fraud": [5, 3, 2, 2, 1, 1, 2, 3, 5, 8, 10, 14, 20, 30, 40, 60, 80, 120, 180, 0],
            "legit": [60_000, 20_000, 9_000, 4_000, 2_000, 1_000, 600, 400, 300, 200, 150, 100,
                      80, 50, 30, 20, 10, 5, 2, 0],
        },
    }  # fmt: skip
    if against:
        result["strategies"]["against"] = _strategy("live.yaml", 2, 0.8)
        result["comparison"] = {
            "newly_flagged": {"count": 140, "usd": 210_000.0, "fraud": 40, "legit": 90},
            "no_longer_flagged": {"count": 60, "usd": 45_000.0, "fraud": 2, "legit": 55},
        }
    return result


@pytest.fixture(scope="module")
def page() -> str:
    return render(_result())


@pytest.fixture(scope="module")
def champion_page() -> str:
    return render(_result(against=True))


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data, validate=True) for data in IMAGE.findall(page)]


@pytest.mark.parametrize("against", [False, True])
def test_the_page_is_html_with_four_png_charts(
    against: bool, page: str, champion_page: str
) -> None:
    html = champion_page if against else page
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    images = _images(html)
    assert html.count('<img src="data:image/png;base64,') == len(images) == 4
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert html.count("<figcaption>") == 4
    assert all(alt for alt in re.findall(r'<img [^>]*alt="([^"]*)"', html))


def test_without_a_threshold_curve_that_chart_is_left_out_with_the_reason() -> None:
    html = render(_result(curve=False))
    assert len(_images(html)) == 3
    assert "No threshold curve" in html


def test_every_rule_and_the_model_appear(page: str) -> None:
    for rule_id in ("amount_limit", "night_owl", "model"):
        assert f"<td>{rule_id}<br><code>" in page


def test_a_hostile_description_appears_only_escaped(page: str, champion_page: str) -> None:
    for html in (page, champion_page):
        assert ESCAPED in html
        assert HOSTILE not in html
        assert "<script" not in html.lower()  # the page itself runs no script


def test_the_escaping_check_would_catch_an_unescaped_string(page: str) -> None:
    """Negative control: the same assertions fail on a page with the raw string spliced in."""
    broken = page.replace(ESCAPED, HOSTILE)
    assert broken != page
    assert HOSTILE in broken
    assert "<script" in broken.lower()


def test_every_user_string_is_escaped_including_names_and_sources() -> None:
    result = _result(against=True)
    result["data"]["source"] = '"><b>source</b>'
    result["strategies"]["strategy"]["name"] = "<i>mine</i>"
    result["strategies"]["strategy"]["rules"][0]["id"] = "<u>$\\bad$_rule</u>"
    result["strategies"]["against"]["thresholds"]["mode"] = "<em>x</em>"
    html = render(result)  # a "$" in a rule id must not break matplotlib's mathtext
    for raw in ("<b>source</b>", "<i>mine</i>", "<u>", "<em>x</em>", '"><b>'):
        assert raw not in html
    assert "&lt;i&gt;mine&lt;/i&gt;" in html
    assert "&lt;u&gt;$\\bad$_rule&lt;/u&gt;" in html
    assert len(_images(html)) == 4


def test_the_page_needs_no_network(page: str, champion_page: str) -> None:
    for html in (page, champion_page):
        assert "http://" not in html
        assert "https://" not in html
        assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?data:)""", html)
        assert "@import" not in html
        assert "url(" not in html


def test_a_null_precision_renders_as_a_dash(page: str) -> None:
    row = re.search(r"<tr><td>night_owl<br>.*?</tr>", page)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
    assert cells[10] == DASH  # the precision column
    assert DASH == "\u2013"


def test_money_has_thousands_separators_and_the_labels_note_comes_first(page: str) -> None:
    assert "$1,234,567" in page
    assert "-$20" in page
    note = page.index("Unknown labels: 1.2%")
    assert note < page.index("<h2>Summary</h2>") < page.index("<h2>Charts</h2>")
    assert "declined" in page[note : page.index("<h2>Summary</h2>")]


def test_a_champion_challenger_run_compares_both(champion_page: str) -> None:
    assert "strategy.yaml v3" in champion_page
    assert "live.yaml v2 (against)" in champion_page
    assert "<h2>What changes</h2>" in champion_page
    assert "Newly flagged" in champion_page
    assert "No longer flagged" in champion_page
    assert "+12.0 pp" in champion_page  # recall 60% against 48%


def test_the_input_is_not_changed() -> None:
    result = _result(against=True)
    before = copy.deepcopy(result)
    render(result)
    assert result == before


def test_a_sparse_result_still_renders_saying_what_is_missing() -> None:
    """No budget, no rules fired, no labelled alert, no scores: dashes and sentences, no error."""
    result = _result(curve=False)
    result["budget"] = 0
    result.pop("score_histogram")
    strategy = result["strategies"]["strategy"]
    strategy["summary"]["precision"] = None
    strategy["alerts_per_day"][0]["alerts"] = None
    html = render(result)
    assert len(_images(html)) == 2
    assert "No score histogram" in html
    assert "Days over the alert budget" not in html
    assert "no daily alert budget" in html
    row = re.search(r"<tr><td>Precision .*?</tr>", html)
    assert row is not None
    assert f'<td class="num">{DASH}</td>' in row.group(0)


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, stream_jobs.backtest_report; print('matplotlib' in sys.modules)"
    root = Path(__file__).resolve().parents[2]  # this checkout, not an installed copy
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"
