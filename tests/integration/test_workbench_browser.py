"""The workbench in a real browser (Playwright driving the OS's Chromium) on the real stack:
broker, Redis, scoring service, the PyFlink job, the feedback app and the workbench, each its
own process. Two analysts sign in; the queue holds the job's alerts; a case shows the card's
timeline from the lake; one click on Fraud blocks the card, and the job declines the card's
next transaction, whose alert reaches the other analyst's open queue without a reload. Wrong
passwords, missing or foreign CSRF tokens and a cross-site form are refused. The page loads
nothing from outside. Screenshots of the queue and a case are kept in ``build/screenshots``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import redis
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from models.online import layout
from services.clients.reading import read_until_idle
from services.core.contract import Alert, Transaction, encode
from services.core.settings import Settings
from services.devstack import processes, stack
from services.devstack.processes import free_loopback_port
from tests.integration.streaming import DecisionTail, produce, running_stack
from tests.integration.test_workbench_page import PASSWORD

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); never a download
# No sandbox as root; no calls home (this machine's network is closed to them).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
WAIT_MS = 60_000


def _cli(settings: Settings, *args: str, stdin: str = "") -> None:
    done = subprocess.run([sys.executable, "-m", "services.cli", *args], input=stdin,
                          env=settings.child_environment(), capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _signed_in(browser: Browser, base: str, name: str, outside: list[str]) -> Page:
    context: BrowserContext = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
    page.goto(base + "/")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("text=Sign in")
    page.wait_for_selector("table#queue")
    return page


def _alert_of(settings: Settings, transaction: str) -> Alert:
    for _, _, _, value in read_until_idle(settings, settings.topic.alerts, 3.0):
        alert = msgspec.json.decode(value, type=Alert)
        if alert.transaction_id == transaction:
            return alert
    raise AssertionError(f"no alert for {transaction}")


def test_two_analysts_work_the_job_s_alerts_and_a_click_changes_the_next_decision(
    tmp_path: Path,
) -> None:
    assert Path(CHROMIUM).exists(), "apt-get install chromium (.ci/run does)"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with running_stack(tmp_path / "state") as base:
        port = free_loopback_port()
        settings = base.updated({"workbench_port": port,
                                 "feedback_metrics_port": free_loopback_port()})  # fmt: skip
        for name in ("ana", "bob"):
            _cli(settings, "workbench", "user", "add", name, "--password-stdin", stdin=PASSWORD)
        logs = tmp_path / "logs"
        env = settings.child_environment()
        started = [
            stack.start_job(settings, logs),
            processes.spawn("feedback-app", [sys.executable, "-m", "services.cli",
                            "feedback-app"], logs / "feedback-app.log", env=env),
            processes.spawn("workbench", [sys.executable, "-m", "services.cli", "workbench"],
                            logs / "workbench.log", env=env),
        ]  # fmt: skip
        tail = DecisionTail(settings)
        client = redis.Redis.from_url(settings.redis.require_url())
        base_url = f"http://127.0.0.1:{port}"
        outside: list[str] = []
        try:
            produce(settings, 2_000, 0, 51, "2026-03-01T00:00:00Z")
            tail.wait_for(2_000, 180, "the job's decisions")
            processes.wait_until(lambda: processes.port_open(port), 60, "the workbench")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                refused = browser.new_page()
                refused.goto(base_url + "/login")
                refused.fill("input[name=name]", "ana")
                refused.fill("input[name=password]", "not the password")
                refused.click("text=Sign in")
                assert refused.locator("text=wrong name or password").count() == 1
                assert refused.locator("table#queue").count() == 0

                ana = _signed_in(browser, base_url, "ana", outside)
                bob = _signed_in(browser, base_url, "bob", outside)
                assert ana.evaluate("typeof htmx") == "object"  # the workbench's own copy
                ana.wait_for_selector("tr[data-transaction]", timeout=WAIT_MS)
                ana.screenshot(path=str(SCREENSHOTS / "workbench-queue.png"), full_page=False)
                first = ana.locator("tr[data-transaction]").first
                transaction = str(first.get_attribute("data-transaction"))
                first.locator("a").click()
                this = f"#timeline tr.this[data-transaction='{transaction}']"

                def in_the_timeline() -> bool:
                    ana.reload()  # the app archives the stream every few seconds
                    return ana.locator(this).count() == 1

                processes.wait_until(in_the_timeline, 60, "the case in the card's timeline")
                case_url = ana.url
                ana.screenshot(path=str(SCREENSHOTS / "workbench-case.png"), full_page=False)

                # Refused: no CSRF token, bob's token in ana's session, a cross-site form.
                outcome = case_url + "/outcome"
                assert ana.request.post(outcome, form={"label": "legit"}).status == 403
                bobs = bob.locator("input[name=csrf]").first.get_attribute("value")
                forged = ana.request.post(outcome, form={"label": "legit", "csrf": str(bobs)})
                assert forged.status == 403
                evil = ana.context.new_page()
                evil.set_content(f'<form method="post" action="{outcome}"><input name="label" '
                                 'value="legit"></form>')  # fmt: skip
                with evil.expect_navigation():
                    evil.evaluate("document.forms[0].submit()")
                assert "closed" not in (evil.content())
                ana.reload()
                assert ana.locator("#status").inner_text().startswith("open")

                ana.click("button[value=fraud]")
                ana.wait_for_selector("#status:has-text('closed: fraud')", timeout=WAIT_MS)
                alert = _alert_of(settings, transaction)
                processes.wait_until(
                    lambda: client.exists(layout.blocklist_card(alert.card_id)) == 1, 30,
                    "the card blocklisted by the feedback app",
                )  # fmt: skip
                ana.reload()  # the case page shows the card blocked, by the label just sent
                assert "Blocked: no" not in ana.locator("text=Blocked:").inner_text()
                nxt = Transaction(**msgspec.structs.asdict(alert.transaction) | {
                    "transaction_id": f"{transaction}-next", "amount": 12.5,
                    "event_time": alert.transaction.event_time_ms + 60_000,
                })  # fmt: skip
                (tmp_path / "next.jsonl").write_bytes(encode(nxt) + b"\n")
                _cli(settings, "produce", "--from-jsonl", str(tmp_path / "next.jsonl"))
                row = bob.wait_for_selector(f"tr[data-transaction='{nxt.transaction_id}']",
                                            timeout=WAIT_MS)  # fmt: skip
                assert row is not None
                assert "blocklist_card" in row.inner_text()
                browser.close()
            decided = tail.wait_for(2_001, 30, "the card's next transaction")
            verdict = next(d for d in decided if d.transaction_id == nxt.transaction_id)
        finally:
            for record in reversed(started):
                processes.stop(record)
            tail.close()
        with sqlite3.connect(settings.state_dir / "workbench.db") as db:
            audit = db.execute("select a.action, a.subject, a.detail, u.name from audit_log a "
                               "join users u on u.id = a.user_id").fetchall()  # fmt: skip
    assert verdict.decision == "decline"
    assert "rule:blocklist_card" in verdict.reasons
    assert audit == [("disposition", transaction, '{"label": "fraud"}', "ana")]
    assert outside == []
    assert (SCREENSHOTS / "workbench-queue.png").stat().st_size > 10_000
