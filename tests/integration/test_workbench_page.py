"""The workbench as an analyst meets it, over real HTTP against a real broker: signed in
(forms refused without their CSRF token), the queue ordered by expected loss with cards
masked, one click closes a case, the disposition reaches ``alert-feedback`` once."""

from __future__ import annotations

import contextlib
import http.cookiejar
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Producer

from services.core.contract import Alert, Feedback, Transaction
from services.core.kafka import assigned_consumer
from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from services.devstack import processes
from services.devstack.processes import free_loopback_port
from tests.integration.streaming import running_stack

PASSWORD = "correct horse battery"


def _alert(transaction: str, score: float, amount: float) -> Alert:
    tx = Transaction(
        transaction_id=transaction, event_time=1_772_323_200_000, card_id="tok_4a7f19c2e8b3d5",
        customer_id="tok_u1", merchant_id="m-grocer", merchant_category="5411", amount=amount,
        currency="USD", country="US", channel="card_present",
    )  # fmt: skip
    return Alert(transaction_id=transaction, card_id=tx.card_id, event_time=1_772_323_200_000,
                 decided_at=1_772_323_200_500, score=score, decision="review",
                 reasons=["amount_spike"], model_version="v0001", transaction=tx)  # fmt: skip


class Browser:
    """Cookies kept, redirects followed; forms posted with the page's CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[str, str, dict[str, str]]:
        with self.opener.open(self.base + path, timeout=10) as reply:
            return reply.geturl(), reply.read().decode(), dict(reply.headers)

    def post(self, path: str, **form: str) -> str:
        body = urllib.parse.urlencode(form).encode()
        with self.opener.open(self.base + path, data=body, timeout=30) as reply:
            return str(reply.read().decode())


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


@contextlib.contextmanager
def serving(
    stack: Settings, folder: Path, users: dict[str, bool]
) -> Iterator[tuple[Settings, str]]:
    """``fraudstream workbench`` as its own process on the stack, with these accounts (name:
    a lead?), until the block ends: its settings and its URL."""
    port = free_loopback_port()
    settings = stack.updated({"workbench_port": port})
    env = settings.child_environment()
    cli = [sys.executable, "-m", "services.cli", "workbench"]
    for name, lead in users.items():
        added = subprocess.run([*cli, "user", "add", name, *(["--lead"] if lead else []),
                                "--password-stdin"], input=PASSWORD + "\n", env=env,
                               capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert added.returncode == 0, added.stderr
    record = processes.spawn("workbench", cli, folder / "workbench.log", env)
    try:
        processes.wait_until(lambda: processes.port_open(port), 60, "the workbench")
        yield settings, f"http://127.0.0.1:{port}"
    finally:
        processes.stop(record)


def test_an_analyst_signs_in_works_the_queue_and_closes_a_case_once(tmp_path: Path) -> None:
    with running_stack(tmp_path / "state") as stack:
        with serving(stack, tmp_path, {"ana": False}) as (settings, base):
            producer = Producer(librdkafka(settings.kafka))
            for alert in (_alert("t-small", 0.9, 10.0), _alert("t-large", 0.5, 100.0)):
                producer.produce(settings.topic.alerts, msgspec.json.encode(alert), alert.card_id)
            assert producer.flush(10) == 0
            browser = Browser(base)
            url, login, headers = browser.get("/")
            assert url.endswith("/login")  # signed out: the queue sends to sign-in
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            with pytest.raises(urllib.error.HTTPError, match="403"):
                browser.post("/login", name="ana", password=PASSWORD)  # no CSRF token
            wrong = browser.post("/login", name="ana", password="x" * 20, csrf=csrf(login))
            assert "wrong name or password" in wrong
            guesser = Browser(base)
            for _ in range(6):  # five wrong, then refused whatever the password
                page = guesser.post("/login", name="bob", password="y" * 20,
                                    csrf=csrf(guesser.get("/login")[1]))  # fmt: skip
            assert "too many wrong passwords" in page  # bob's name is resting; ana's is not

            def queue() -> str:
                return browser.get("/")[1]

            browser.post("/login", name="ana", password=PASSWORD, csrf=csrf(wrong))
            processes.wait_until(lambda: "t-small" in queue() and "t-large" in queue(), 30,
                                 "both alerts in the queue")  # fmt: skip
            page = queue()
            assert page.index("t-large") < page.index("t-small")  # loss 50 before loss 9
            assert "tok_4a7f19c2e8b3d5" not in page  # masked
            case_path = re.search(r'href="(/cases/\d+)">[^<]*</a></td>\s*<td>[^<]*</td>', page)
            assert case_path
            case_page = browser.get(case_path.group(1))[1]
            with pytest.raises(urllib.error.HTTPError, match="403"):
                browser.post(case_path.group(1) + "/outcome", label="fraud", csrf="forged")
            closed = browser.post(case_path.group(1) + "/outcome", label="fraud",
                                  csrf=csrf(case_page))  # fmt: skip
            assert "closed: fraud" in closed
            browser.post(case_path.group(1) + "/outcome", label="fraud", csrf=csrf(case_page))
        sent = _feedback(settings)
        assert [(f.transaction_id, f.label, f.analyst) for f in sent] == [
            ("t-large", "fraud", "ana")
        ]
        with sqlite3.connect(settings.state_dir / "workbench.db") as db:
            assert db.execute("select action, subject from audit_log").fetchall() == [
                ("disposition", "t-large")]  # fmt: skip


def _feedback(settings: Settings) -> list[Feedback]:
    """Every disposition on alert-feedback: read up to a sentinel sent after the last click,
    so none sent before it can be missed (Tansu's end offsets read low)."""
    producer = Producer(librdkafka(settings.kafka))
    producer.produce(settings.topic.feedback, b"sentinel", b"sentinel")
    assert producer.flush(10) == 0
    consumer = assigned_consumer(settings, [settings.topic.feedback], group="test-feedback")
    found: list[Feedback] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                if message.error():
                    continue
                if message.value() == b"sentinel":
                    return found
                found.append(msgspec.json.decode(message.value() or b"", type=Feedback))
    finally:
        consumer.close()
    raise AssertionError(f"no sentinel within 30 s; read {found}")


def test_an_analyst_blocks_a_card_by_its_number_and_withdraws_it_signed_and_audited(
    tmp_path: Path,
) -> None:
    """The number is tokenized before it is stored or shown; a value that could never match
    is refused on the page; both changes carry the signed-in analyst in the audit log."""
    with running_stack(tmp_path / "state") as stack:
        with serving(stack, tmp_path, {"ana": False}) as (settings, base):
            browser = Browser(base)
            login = browser.get("/login")[1]
            browser.post("/login", name="ana", password=PASSWORD, csrf=csrf(login))
            page = browser.get("/lists")[1]
            with pytest.raises(urllib.error.HTTPError, match="403"):
                browser.post("/lists", action="block", kind="card", value="4111111111111111",
                              reason="stolen")  # fmt: skip
            refused = browser.post("/lists", action="block", kind="country", value="USA",
                                   reason="test", csrf=csrf(page))  # fmt: skip
            assert "a country is two letters" in refused
            added = browser.post("/lists", action="block", kind="card",
                                 value="4111 1111 1111 1111", reason="stolen", days="30",
                                 csrf=csrf(page))  # fmt: skip
            assert "4111" not in added.replace("tok_", "")  # never the number, masked token
            stored = settings.redis.client().hkeys("fs:v3:{lists}:entries")
            assert len(stored) == 1
            assert b"4111111111111111" not in stored[0]
            token = re.search(r'data-value="([^"]+)"', added)
            assert token
            removed = browser.post("/lists/remove", action="block", kind="card",
                                   value=token.group(1), csrf=csrf(added))  # fmt: skip
            assert 'data-value="' not in removed
            assert settings.redis.client().hlen("fs:v3:{lists}:entries") == 0
        with sqlite3.connect(settings.state_dir / "workbench.db") as db:
            rows = db.execute("select a.action, u.name from audit_log a join users u "
                              "on u.id = a.user_id order by a.id").fetchall()  # fmt: skip
        assert rows == [("list add", "ana"), ("list remove", "ana")]


def test_the_queue_filters_take_and_budget(tmp_path: Path) -> None:
    """Filters narrow the queue (rule, amount, assignee, outcome), a case taken is the
    analyst's, today's alerts are counted against the strategy's budget; a bad filter is one
    line, not a stack trace."""
    with (
        running_stack(tmp_path / "state") as stack,
        serving(stack, tmp_path, {"ana": False}) as (settings, base),
    ):
        producer = Producer(librdkafka(settings.kafka))
        now_ms = int(time.time() * 1000)
        for name, amount, reasons in (
            ("tx-velo", 20.0, ["velocity"]),
            ("tx-spike", 900.0, ["amount_spike"]),
        ):
            alert = msgspec.structs.replace(_alert(name, 0.6, amount), reasons=reasons,
                                            decided_at=now_ms)  # fmt: skip
            producer.produce(settings.topic.alerts, msgspec.json.encode(alert), alert.card_id)
        assert producer.flush(10) == 0
        browser = Browser(base)
        login = browser.get("/login")[1]
        browser.post("/login", name="ana", password=PASSWORD, csrf=csrf(login))
        processes.wait_until(lambda: "tx-spike" in browser.get("/")[1], 30, "the cases")
        queue = browser.get("/")[1]
        assert "Today: 2 alerts of a budget of 500" in queue  # the shipped strategy's
        assert "tx-velo" not in browser.get("/?rule=amount_spike")[1]
        assert "tx-spike" in browser.get("/?rule=spike")[1]
        assert "tx-spike" not in browser.get("/?rule=%25")[1]  # a literal %, no wildcard
        assert "tx-velo" not in browser.get("/?min_amount=100")[1]
        assert "tx-spike" in browser.get("/?min_amount=100")[1]
        assert "tx-spike" not in browser.get("/?assignee=me")[1]
        for hostile, status in (
            ("/?max_age_min=%C2%B2", "400"),
            ("/?min_amount=nan", "400"),
            ("/cases/" + "9" * 30, "404"),
            ("/events?after=1e99", "400"),
        ):
            with pytest.raises(urllib.error.HTTPError, match=status):  # never a 500
                browser.get(hostile)
        path = re.search(r'<tr data-transaction="tx-spike"><td><a href="(/cases/\d+)"', queue)
        assert path
        browser.post(path.group(1) + "/assign", csrf=csrf(browser.get(path.group(1))[1]))
        case_page = browser.get(path.group(1))[1]
        others = case_page.split('id="card-cases"')[1].split("</table>")[0]
        assert "20.00 USD" in others  # the card's other case, tx-velo
        assert "900.00 USD" not in others  # not the case itself
        assert 'id="features"' in case_page
        assert "block merchant" not in case_page  # the negative control
        lists_page = browser.get("/lists")[1]
        browser.post("/lists", action="block", kind="merchant", value="m-grocer",
                     reason="skimmer", csrf=csrf(lists_page))  # fmt: skip
        assert "block merchant: skimmer" in browser.get(path.group(1))[1]
        mine = browser.get("/?assignee=me")[1]
        assert "tx-spike" in mine
        assert "tx-velo" not in mine
        with pytest.raises(urllib.error.HTTPError, match="400"):
            browser.get("/?outcome=maybe")


def test_a_candidate_is_validated_and_backtested_by_anyone_published_and_rolled_back_by_a_lead(
    tmp_path: Path,
) -> None:
    """On the strategy page: a broken candidate lists its problems, a good one its changes;
    its backtest over the lake's last days runs beside the page and shows its report; an
    analyst may neither publish nor roll back, a lead may, and both are audited under the
    lead."""
    from stream_jobs import strategy_feed
    from stream_jobs.strategy import DEFAULT_FILE

    with running_stack(tmp_path / "state") as stack:
        with serving(stack, tmp_path, {"ana": False, "lea": True}) as (settings, base):
            _archive_recent_transactions(settings, 3_000)
            candidate = DEFAULT_FILE.read_text().replace("description:", "description: tighter;", 1)
            analyst = Browser(base)
            analyst.post(
                "/login", name="ana", password=PASSWORD, csrf=csrf(analyst.get("/login")[1])
            )
            page = analyst.get("/strategy")[1]
            assert "In force: version" in page
            assert 'id="rollback"' not in page  # an analyst is not offered it
            broken = analyst.post("/strategy", document="rules: [{id: x}]", do="validate",
                                  csrf=csrf(page))  # fmt: skip
            assert 'id="problems"' in broken
            valid = analyst.post("/strategy", document=candidate, do="validate", csrf=csrf(page))
            assert "valid: it may be backtested and published" in valid
            too_long = analyst.post("/strategy", document=candidate, do="backtest",
                                    days="400", csrf=csrf(page))  # fmt: skip
            assert "days: 1 to 31" in too_long
            running = analyst.post("/strategy", document=candidate, do="backtest", days="3",
                                   csrf=csrf(page))  # fmt: skip
            run_id = re.search(r"<h2>Backtest (\d+):", running)
            assert run_id, running
            report = _wait_for_report(analyst, int(run_id.group(1)))
            listed = analyst.get("/strategy")[1].split('id="backtests"')[1]
            assert re.search(r"<td>ana</td>\s*<td>done</td>", listed), listed
            assert "Backtest: the candidate" in report
            assert "data:image/png;base64," in report
            with pytest.raises(urllib.error.HTTPError, match="403"):
                analyst.post("/strategy", document=candidate, do="publish", csrf=csrf(page))
            with pytest.raises(urllib.error.HTTPError, match="403"):
                analyst.post("/strategy/rollback", csrf=csrf(page))
            lead = Browser(base)
            lead.post("/login", name="lea", password=PASSWORD, csrf=csrf(lead.get("/login")[1]))
            done = lead.post("/strategy", document=candidate, do="publish",
                             csrf=csrf(lead.get("/strategy")[1]))  # fmt: skip
            assert "published version 1" in done
            processes.wait_until(lambda: "In force: version 1" in lead.get("/strategy")[1], 30,
                                 "version 1 in force (10 s after its publication)")  # fmt: skip
            page = lead.get("/strategy")[1]
            assert 'name="to" value="0"' in page
            assert 'name="from" value="1"' in page
            stale = lead.post("/strategy/rollback", to="0", csrf=csrf(page), **{"from": "0"})
            assert "version 1 is in force now: look again" in stale  # the page was out of date
            rolled = lead.post("/strategy/rollback", to="0", csrf=csrf(page), **{"from": "1"})
            assert "version 0 published again as version 2" in rolled
        published = strategy_feed.read_published(settings).documents
        assert list(published) == [1, 2]
        assert published[2] is not None
        assert published[2].restores == 0
        with sqlite3.connect(settings.state_dir / "workbench.db") as db:
            rows = db.execute("select a.action, a.subject, u.name from audit_log a join users u "
                              "on u.id = a.user_id order by a.id").fetchall()  # fmt: skip
        assert rows == [("strategy backtest", f"backtest {run_id.group(1)}", "ana"),
                        ("strategy publish", "version 1", "lea"),
                        ("strategy rollback", "version 2", "lea")]  # fmt: skip


def _archive_recent_transactions(settings: Settings, count: int) -> None:
    """Generated transactions of the last two days in the stack's lake, and the fraud among
    them labelled, as the feedback app archives them (what a backtest replays)."""
    from models.lake import tables as lk
    from services.clients.produce import generated_items
    from services.core.contract import LabelRecord
    from services.generator import GeneratorConfig

    start = int(time.time() * 1000) - 2 * 86_400_000
    items = list(generated_items(GeneratorConfig(seed=3, start_ms=start, fraud_rate=0.02), count))
    lake = lk.Lake(settings.lake_path)
    lake.append("transactions", [lk.Sourced("transactions", 0, i, lk.transaction_row(x.transaction))
                                 for i, x in enumerate(items)])  # fmt: skip
    labels = [
        LabelRecord(transaction_id=tx.transaction_id, label="fraud", analyst="ana",
                    labelled_at=tx.event_time_ms + 60_000, event_time=tx.event_time_ms,
                    card_id=tx.card_id, customer_id=tx.customer_id, merchant_id=tx.merchant_id)
        for tx in (x.transaction for x in items if x.is_fraud)
    ]  # fmt: skip
    assert labels
    lake.append("labels", [lk.Sourced("labels", 0, i, lk.label_row(r))
                           for i, r in enumerate(labels)])  # fmt: skip


def _wait_for_report(browser: Browser, run: int) -> str:
    """The report of backtest ``run`` once done (a failure's reason fails the test)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        page = browser.get(f"/backtests/{run}")[1]
        assert 'id="backtest-error"' not in page, page
        if 'id="report"' in page:
            _, report, headers = browser.get(f"/backtests/{run}/report")
            assert "img-src data:" in headers["content-security-policy"]
            return report
        time.sleep(0.5)
    raise AssertionError(f"backtest {run} did not finish in 120 s")


def test_several_of_a_cards_cases_in_one_click_and_a_chargeback_on_any_transaction(
    tmp_path: Path,
) -> None:
    """Ticking the card's other open case labels both; a chargeback needs no alert, carries
    the transaction's date, and a malformed id or date is refused before anything is sent."""
    with running_stack(tmp_path / "state") as stack:
        with serving(stack, tmp_path, {"ana": False}) as (settings, base):
            producer = Producer(librdkafka(settings.kafka))
            now_ms = int(time.time() * 1000)
            for alert in (_alert("tx-first", 0.6, 30.0), _alert("tx-second", 0.7, 40.0)):
                alert = msgspec.structs.replace(alert, decided_at=now_ms)  # alerted today
                producer.produce(settings.topic.alerts, msgspec.json.encode(alert), alert.card_id)
            assert producer.flush(10) == 0
            browser = Browser(base)
            browser.post(
                "/login", name="ana", password=PASSWORD, csrf=csrf(browser.get("/login")[1])
            )
            processes.wait_until(lambda: "tx-second" in browser.get("/")[1], 30, "the cases")
            queue = browser.get("/")[1]
            path = re.search(r'<tr data-transaction="tx-second"><td><a href="(/cases/\d+)"', queue)
            assert path
            case_page = browser.get(path.group(1))[1]
            other = re.search(r'name="also" value="(\d+)"', case_page)
            assert other
            browser.post(path.group(1) + "/outcome", label="fraud", also=other.group(1),
                         csrf=csrf(case_page))  # fmt: skip
            assert "tx-first" not in browser.get("/")[1]  # both closed
            shown = browser.get("/overview")[1]
            section = shown.split('id="window-7"')[1].split("</section>")[0]
            assert "100 % of 2" in section  # both fraud: amount_spike's precision
            assert re.search(r'id="analysts-7".*>ana<.*>2<', section, re.S)
            token = csrf(queue)
            for bad in ({"transaction_id": "x" * 200, "date": "2026-11-02"},
                        {"transaction_id": "tx-approved", "date": "yesterday"}):  # fmt: skip
                with pytest.raises(urllib.error.HTTPError, match="400"):
                    browser.post("/chargeback", csrf=token, **bad)
            browser.post("/chargeback", transaction_id="tx-approved", date="2026-11-02", csrf=token)
        sent = {f.transaction_id: f for f in _feedback(settings)}
        assert set(sent) == {"tx-first", "tx-second", "tx-approved"}
        assert sent["tx-approved"].label == "fraud"
        assert sent["tx-approved"].event_time == 1_793_620_800_000  # 2026-11-02T12:00:00Z
