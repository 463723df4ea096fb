"""Strategy versions on the real broker, through the real CLI: published, refused with their
reasons, followed by a running worker's feed without a restart, listed, diffed and rolled back;
analysts' lists from the CLI, card numbers never in clear."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.core.settings import Settings
from services.core.signals import EMPTY
from stream_jobs import strategy as st
from stream_jobs.strategy_feed import StrategyFeed
from tests.integration.streaming import BROKERS, running_stack

RULE = """
description: reviews what the shipped one approves above 10 USD
rules:
  - {id: over_ten, when: "amount_usd > 10.0", outcome: review}
thresholds: {mode: model}
"""


def _cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *argv],
                          env=settings.child_environment(), capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("broker", BROKERS)
def test_publish_follow_list_diff_and_roll_back_without_a_restart(
    tmp_path: Path, broker: str
) -> None:
    with running_stack(tmp_path, broker) as settings:
        feed = StrategyFeed(settings, EMPTY)
        feed.start()  # a worker already running: it holds the shipped default only
        try:
            assert [c.version for c in feed.versions.all] == [0]
            good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
            good.write_text(RULE)
            bad.write_text(
                "rules:\n"
                "  - {id: over_ten, when: 'amount_usd * 2 > 10', outcome: review}\n"
                "  - {id: nope, when: 'unknown_thing > 1.0', outcome: review}\n"
            )
            refused = _cli(settings, "rules", "validate", str(bad))
            assert refused.returncode == 1
            assert "rule over_ten: fails on a typical row: TypeError" in refused.stderr
            assert "rule nope: unknown names unknown_thing" in refused.stderr
            assert _cli(settings, "rules", "publish", str(bad)).returncode == 1
            past = _cli(settings, "rules", "publish", str(good), "--at", "2020-01-01T00:00:00Z")
            assert past.returncode == 1
            assert "effective_from is before" in past.stderr
            assert _cli(settings, "rules", "validate", str(good)).returncode == 0

            published = _cli(settings, "rules", "publish", str(good), "--at", "15s")
            assert published.returncode == 0, published.stderr
            assert "published version 1" in published.stdout
            _wait(lambda: len(feed.versions.all) == 2, 10, "the running feed never saw v1")
            v1 = feed.versions.all[0].strategy
            assert v1.version == 1
            assert v1.effective_from > time.time() * 1000  # not yet in force
            assert feed.versions.for_event(v1.effective_from - 1).version == 0
            assert feed.versions.for_event(v1.effective_from).version == 1

            listed = json.loads(_cli(settings, "rules", "list", "--json").stdout)
            assert [(r["version"], r["in_force"]) for r in listed] == [(0, True), (1, False)]
            diff = _cli(settings, "rules", "diff", "0", "1").stdout
            assert "- rule card_testing" in diff
            assert "+ rule over_ten: amount_usd > 10.0" in diff
            shown = st.parse(_cli(settings, "rules", "show", "1").stdout)
            assert shown.rules == v1.rules

            rolled = _cli(settings, "rules", "rollback", "--to", "0")
            assert rolled.returncode == 0, rolled.stderr
            _wait(lambda: len(feed.versions.all) == 3, 10, "the running feed never saw v2")
            v2 = feed.versions.all[0].strategy
            assert (v2.version, v2.rules) == (2, st.default().rules)
            last = max(v1.effective_from, v2.effective_from)
            assert feed.versions.for_event(last).version == 2  # v1 never comes back
            assert (v2.restores, v2.replaces) == (0, 0)  # v1 was not in force yet

            numbered = tmp_path / "numbered.yaml"
            numbered.write_text("version: 9\n" + RULE)
            skipped = _cli(settings, "rules", "publish", str(numbered))
            assert skipped.returncode == 1
            assert "the next version is 3" in skipped.stderr
            revoked = _cli(settings, "rules", "revoke", "2")
            assert revoked.returncode == 0, revoked.stderr
            _wait(
                lambda: [c.version for c in feed.versions.all] == [1, 0],
                10,
                "the running feed never dropped the revoked v2",
            )
        finally:
            feed.close()
        restarted = StrategyFeed(settings, EMPTY)  # a worker started later reads them all
        restarted.start()
        restarted.close()
        assert sorted(c.version for c in restarted.versions.all) == [0, 1]  # v2: revoked


def test_lists_from_the_cli_tokenize_cards_and_refuse_bad_input(tmp_path: Path) -> None:
    with running_stack(tmp_path) as settings:
        card = "4111 1111 1111 1111"
        added = _cli(settings, "lists", "add", "block", "card", card, "--reason", "stolen",
                     "--expires", "1h", "--by", "alice")  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert _cli(settings, "lists", "add", "allow", "country", "gb", "--reason", "home",
                    "--by", "alice").returncode == 0  # fmt: skip
        shown = _cli(settings, "lists", "show", "--json")
        assert "4111" not in shown.stdout  # the card is its token, never its number
        rows = json.loads(shown.stdout)
        assert [(r["action"], r["kind"], r["reason"], r["added_by"]) for r in rows] == [
            ("block", "card", "stolen", "alice"),
            ("allow", "country", "home", "alice"),
        ]
        assert rows[1]["value"] == "GB"
        assert rows[0]["value"].startswith("tok_")
        assert rows[0]["expires_at_ms"] > time.time() * 1000
        past = "2020-01-01T00:00:00Z"
        for bad in (["add", "block", "card", "x", "--reason", "r", "--expires", past],
                    ["add", "block", "planet", "x", "--reason", "r"],
            ["add", "block", "country", "USA", "--reason", "r"],
            ["add", "block", "bin", "41x111", "--reason", "r"],
                    ["add", "block", "merchant", "m", "--reason", "\x1b[2J"],
                    ["remove", "allow", "merchant", "never-added"]):  # fmt: skip
            refused = _cli(settings, "lists", *bad)
            assert refused.returncode != 0, bad
            assert "Traceback" not in refused.stderr
        removed = _cli(settings, "lists", "remove", "block", "card", "4111111111111111")
        assert removed.returncode == 0, removed.stderr
        assert len(json.loads(_cli(settings, "lists", "show", "--json").stdout)) == 1
