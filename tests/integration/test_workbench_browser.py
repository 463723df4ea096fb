"""The workbench in a real browser (Playwright driving the OS's Chromium): an analyst signs
in, a new alert appears in the open queue without a reload, and one click closes its case.
The page loads nothing from outside (every script is served by the workbench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
from confluent_kafka import Producer
from playwright.sync_api import Request, sync_playwright

from services.core.kafka_config import librdkafka
from services.devstack import processes
from services.devstack.processes import free_loopback_port
from tests.integration.streaming import running_stack
from tests.integration.test_workbench_page import PASSWORD, _alert

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); never a download
# No sandbox as root; no calls home (this machine's network is closed to them).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update"]  # fmt: skip


def test_a_new_alert_appears_live_and_one_click_closes_its_case(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "apt-get install chromium (.ci/run does)"
    with running_stack(tmp_path / "state") as stack:
        port = free_loopback_port()
        settings = stack.updated({"workbench_port": port})
        env = settings.child_environment()
        cli = [sys.executable, "-m", "services.cli", "workbench"]
        subprocess.run([*cli, "user", "add", "ana", "--password-stdin"], input=PASSWORD + "\n",
                       env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        producer = Producer(librdkafka(settings.kafka))
        record = processes.spawn("workbench", cli, tmp_path / "workbench.log", env)
        base = f"http://127.0.0.1:{port}"
        outside: list[str] = []
        try:
            processes.wait_until(lambda: processes.port_open(port), 60, "the workbench")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = browser.new_page()

                def note(request: Request) -> None:
                    if not request.url.startswith(base):
                        outside.append(request.url)

                page.on("request", note)
                page.goto(base + "/")
                page.fill("input[name=name]", "ana")
                page.fill("input[name=password]", PASSWORD)
                page.click("text=Sign in")
                page.wait_for_selector("table#queue")
                assert page.evaluate("typeof htmx") == "object"  # the workbench's own copy
                assert page.locator("tr[data-transaction]").count() == 0
                alert = _alert("t-live", 0.7, 250.0)
                producer.produce(settings.topic.alerts, msgspec.json.encode(alert), alert.card_id)
                assert producer.flush(10) == 0
                row = page.wait_for_selector("tr[data-transaction=t-live]", timeout=30_000)
                assert row is not None
                assert "250.00 USD" in row.inner_text()
                page.click("tr[data-transaction=t-live] a")
                page.click("button[value=fraud]")
                page.wait_for_selector("#status:has-text('closed: fraud')", timeout=30_000)
                browser.close()
        finally:
            processes.stop(record)
        assert outside == []
