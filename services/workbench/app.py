"""The workbench's page: sign-in, the queue of open cases, a case and its outcome in one
click. Server-rendered; every form carries the session's CSRF token; sessions are signed
cookies that expire; the usual security headers on every reply; cards only as tokens, masked."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import yaml
from confluent_kafka import KafkaException
from jinja2 import Environment, FileSystemLoader, select_autoescape
from redis.exceptions import RedisError
from sqlalchemy import Engine, Select, String, cast, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, defer
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.datastructures import FormData, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.errors import LakeError
from models.lake.tables import Lake
from models.online import lists
from models.online.store import card_view
from models.training.registry import working_registry
from services.clients.feedback import FeedbackProducer
from services.core.contract import Feedback, Id, parse_event_time
from services.core.errors import UserError
from services.core.settings import Settings
from services.core.signals import load_signals
from services.workbench import accounts, backtests, overview
from services.workbench.cases import Audit, Backtest, Case, Role, Status, User, now
from services.workbench.intake import Health
from services.workbench.timeline import card_timeline, cards_sharing_a_device
from stream_jobs import strategy
from stream_jobs import strategy_feed as feed

log = logging.getLogger(__name__)


class _Id(IntegerConvertor):
    """A row id in a path: at most 15 digits (a longer one is no row, not a database error)."""

    regex = "[0-9]{1,15}"


register_url_convertor("id", _Id())

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# A backtest report is a page of its own: inline styles and charts as data: images, no script.
REPORT_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
)
LABELS = ("fraud", "legit")
BROKER_WAIT_S = 10.0  # a disposition acknowledged, or the strategy read, within this
NOT_ACKNOWLEDGED = (
    "the broker did not acknowledge in 10 s: nothing more will be sent; one already on its "
    "way may still arrive. Reload the case before trying again."
)
QUEUE_ROWS = 500  # the top of the queue; filters narrow it
WINDOW_DAYS = 30  # what an investigator sees of a card's and a merchant's recent cases
EVENTS_POLL_S = 1.0  # how soon a new case reaches open queues (any replica's intake)


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html"]))  # fmt: skip
    env.filters["masked"] = lambda token: f"…{str(token)[-6:]}"  # a token's tail tells cards apart
    env.filters["time"] = lambda ms: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
    env.filters["age"] = lambda ms: f"{max(0, int(time.time() - ms / 1000)) // 60} min"
    env.filters["add_label"] = lambda pair: (pair[0], pair[1], str(pair[1]))
    env.filters["precision_row"] = lambda p: (
        p.group,
        p.share,
        f"{100 * p.share:.0f} % of {p.fraud + p.legit}",
    )
    return env


class Workbench:
    def __init__(
        self, settings: Settings, store: Engine, feedback: FeedbackProducer, health: Health
    ) -> None:
        self.store, self.feedback, self.templates = store, feedback, _templates()
        self.health = health
        self.settings = settings
        self.redis = settings.redis.client(socket_timeout=2.0, socket_connect_timeout=2.0)
        self._budget: tuple[float, int | None] | None = None
        self.tokenizer = settings.token.tokenizer()
        self.lake = Lake(settings.lake_path)
        self.failures = accounts.Failures()

    def page(self, request: Request, name: str, user: User | None, **context: Any) -> Response:
        html = self.templates.get_template(name).render(user=user, csrf=_csrf(request), **context)
        return HTMLResponse(html)

    def user(self, request: Request, session: Session) -> User | None:
        found = request.session.get("user_id")
        return session.get(User, found) if isinstance(found, int) else None

    def login_page(self, request: Request) -> Response:
        return self.page(request, "login.html", None)

    def login(self, request: Request, form: FormData) -> Response:
        name = str(form.get("name", ""))[:64]
        if self.failures.refused(name):
            return self.page(request, "login.html", None, error="too many wrong passwords for "
                             "this name: try again in a few minutes")  # fmt: skip
        with Session(self.store) as session:
            user = accounts.sign_in(session, name, str(form.get("password", "")))
            if user is None:
                self.failures.add(name)
                return self.page(request, "login.html", None, error="wrong name or password")
            request.session.clear()  # a new session at sign-in: no fixation
            request.session["user_id"] = user.id
        return RedirectResponse("/", 303)

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if _csrf_ok(request, form.get("csrf")):
            request.session.clear()
        return RedirectResponse("/login", 303)

    def queue(self, request: Request) -> Response:
        """Open cases by expected loss (or age), filtered by rule, amount, age, assignee or
        outcome; today's alerts against the strategy's daily budget."""
        with Session(self.store) as session:
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            try:
                query = _filtered(request.query_params, user)
            except ValueError as error:
                return PlainTextResponse(str(error), 400)
            cases = session.scalars(query.limit(QUEUE_ROWS)).all()
            last = session.scalar(select(func.max(Case.id))) or 0
            midnight = int(time.time() // 86_400 * 86_400 * 1000)
            today = session.scalar(select(func.count()).where(Case.alerted_at >= midnight)) or 0
            budget = self.budget()
            return self.page(request, "queue.html", user, cases=cases, last=last, today=today,
                             budget=budget, params=request.query_params,
                             intake=self.health)  # fmt: skip

    def budget(self) -> int | None:
        """The daily alert budget of the strategy in force, read at most every 30 s; the last
        one known while the broker does not answer (None before the first)."""
        if self._budget is None or self._budget[0] < time.monotonic():
            try:
                versions = feed.read_published(self.settings, timeout=BROKER_WAIT_S).live
            except (KafkaException, UserError) as error:
                log.warning("the strategy's budget: the broker did not answer: %s", error)
                known = self._budget[1] if self._budget else None
                self._budget = (time.monotonic() + 30, known)
                return known
            active = strategy.in_force(versions, int(time.time() * 1000)) or strategy.default()
            self._budget = (time.monotonic() + 30, active.thresholds.daily_alert_budget)
        return self._budget[1]

    def ready(self, _request: Request) -> Response:
        """200 while the case store answers (the page is useless without it)."""
        try:
            with self.store.connect() as connection:
                connection.execute(select(1))
        except SQLAlchemyError as error:
            return PlainTextResponse(f"the case store: {type(error).__name__}", 503)
        return PlainTextResponse("ok")

    def overview(self, request: Request) -> Response:
        """Today's alerts against the budget; per window, dispositions per analyst, precision
        by rule and by score band, the median time to a disposition; drawn as SVG bars."""
        with Session(self.store) as session:
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            now_ms = int(time.time() * 1000)
            midnight = now_ms // 86_400_000 * 86_400_000
            today = session.scalar(select(func.count()).where(Case.alerted_at >= midnight)) or 0
            windows = [overview.figures(session, days, now_ms) for days in (7, 30)]
            return self.page(request, "overview.html", user, today=today, budget=self.budget(),
                             windows=windows)  # fmt: skip

    def assign(self, request: Request, form: FormData) -> Response:
        """Take a case: assigned to the signed-in analyst, audited."""
        with Session(self.store) as session, session.begin():
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            case = session.get(Case, request.path_params["case_id"], with_for_update=True)
            if case is None:
                return PlainTextResponse("no such case", 404)
            if case.status is Status.OPEN:
                case.status, case.assignee_id = Status.ASSIGNED, user.id
                session.add(Audit(at=now(), user_id=user.id, action="assign",
                                  subject=case.transaction_id, detail={}))  # fmt: skip
        return RedirectResponse(f"/cases/{request.path_params['case_id']}", 303)

    async def events(self, request: Request) -> Response:
        """New cases as they are taken in, each a rendered row with its id (server-sent
        events: a reconnecting browser resumes after the last it got), while signed in."""
        resumed = request.headers.get("last-event-id") or request.query_params.get("after", "0")
        after = _number(resumed)
        if after is None:
            return PlainTextResponse("after: a case number", 400)
        if await run_in_threadpool(self.signed_out, request):
            return PlainTextResponse("sign in", 401)

        async def stream() -> AsyncIterator[str]:
            seen = after
            while not await request.is_disconnected():
                if await run_in_threadpool(self.signed_out, request):
                    return
                rows, seen = await run_in_threadpool(self.rows_after, seen)
                for case_id, html in rows:
                    yield f"id: {case_id}\nevent: case\ndata: {html}\n\n"
                await asyncio.sleep(EVENTS_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream")

    def signed_out(self, request: Request) -> bool:
        with Session(self.store) as session:
            return self.user(request, session) is None

    def rows_after(self, seen: int) -> tuple[list[tuple[int, str]], int]:
        """The rendered rows of the cases after case ``seen`` (at most 100), and the last id."""
        row = self.templates.get_template("row.html")
        with Session(self.store) as session:
            new = session.scalars(
                select(Case).where(Case.id > seen).order_by(Case.id).limit(100)
            ).all()
            rendered = [(c.id, row.render(case=c).replace("\n", " ").strip()) for c in new]
        return rendered, rendered[-1][0] if rendered else seen

    def case(self, request: Request) -> Response:
        with Session(self.store) as session:
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            case = session.get(Case, request.path_params["case_id"])
            if case is None:
                return PlainTextResponse("no such case", 404)
            since = case.event_time - WINDOW_DAYS * 86_400_000  # the days before the payment
            recent = select(Case).where(Case.event_time >= since, Case.id != case.id)
            card_cases = session.scalars(
                recent.where(Case.card_token == case.card_token)
                .order_by(Case.event_time.desc())
                .limit(200)
            ).all()
            same_merchant = session.scalars(
                recent.where(Case.merchant_id == case.merchant_id,
                             Case.card_token != case.card_token).limit(50)
            ).all()  # fmt: skip
            try:
                online = card_view(self.redis, [case.card_token])
                mine = {("card", case.card_token), ("merchant", case.merchant_id)}
                entries = [
                    e for e in lists.entries(self.redis).values() if (e.kind, e.value) in mine
                ]
            except RedisError as error:
                online, entries = {"error": f"Redis: {error}"}, []
            # The days before it, and the week after: what the card did next.
            until = min(int(time.time() * 1000), case.event_time + 7 * 86_400_000)
            try:
                timeline = card_timeline(self.lake, case.card_token, since, until)
                on_devices = cards_sharing_a_device(self.lake, case.card_token, since, until)
                timeline_error = ""
            except LakeError as error:
                timeline, on_devices, timeline_error = [], [], str(error)
            return self.page(request, "case.html", user, case=case, card_cases=card_cases,
                             related=sorted({c.card_token for c in same_merchant}),
                             on_devices=on_devices,
                             online=online, entries=entries, days=WINDOW_DAYS,
                             timeline=timeline, timeline_error=timeline_error)  # fmt: skip

    def outcome(self, request: Request, form: FormData) -> Response:
        """The analyst's outcome of this case and of any of the card's other cases ticked
        beside it: each sent as the pipeline's Feedback, acknowledged by the broker, then the
        cases closed and audited in one transaction. A second click changes nothing."""
        label = str(form.get("label", ""))
        if label not in LABELS:
            return PlainTextResponse("label: fraud or legit", 400)
        with Session(self.store) as session, session.begin():
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            case = session.get(Case, request.path_params["case_id"], with_for_update=True)
            if case is None:
                return PlainTextResponse("no such case", 404)
            ticked = {n for v in form.getlist("also") if (n := _number(v)) is not None} - {case.id}
            also = session.scalars(select(Case).where(
                Case.id.in_(ticked), Case.card_token == case.card_token).with_for_update()
            ).all() if ticked else []  # fmt: skip
            open_cases = [c for c in (case, *also) if c.status is not Status.CLOSED]
            for each in open_cases:
                self.feedback.send(each.transaction_id, label, user.name)  # type: ignore[arg-type]
            if open_cases and not self.acknowledged():
                return PlainTextResponse(NOT_ACKNOWLEDGED, 503)
            for each in open_cases:
                each.status, each.outcome, each.closed_at = Status.CLOSED, label, now()
                each.closed_by = user.name
                audit = Audit(at=now(), user_id=user.id, action="disposition",
                              subject=each.transaction_id, detail={"label": label})  # fmt: skip
                session.add(audit)
        return RedirectResponse(f"/cases/{request.path_params['case_id']}", 303)

    def chargeback(self, request: Request, form: FormData) -> Response:
        """A chargeback on any transaction, alerted or not (an approved payment): a fraud
        label with the transaction's date, which narrows the pipeline's search for it."""
        try:
            transaction = msgspec.convert(str(form.get("transaction_id", "")).strip(), Id)
            Feedback(
                transaction_id=transaction, label="fraud", analyst="-", time=int(time.time() * 1000)
            )  # its checks, before anything is sent
        except (msgspec.ValidationError, ValueError) as error:
            return PlainTextResponse(f"transaction id: {error}", 400)
        try:
            when = parse_event_time(str(form.get("date", "")) + "T12:00:00Z", "date")
        except ValueError:
            return PlainTextResponse("date: YYYY-MM-DD, the transaction's day", 400)
        with Session(self.store) as session, session.begin():
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            self.feedback.send(transaction, "fraud", user.name, "chargeback", when)
            if not self.acknowledged():
                return PlainTextResponse(NOT_ACKNOWLEDGED, 503)
            audit = Audit(at=now(), user_id=user.id, action="chargeback", subject=transaction,
                          detail={"date": str(form.get("date"))})  # fmt: skip
            session.add(audit)
        return RedirectResponse("/", 303)

    def acknowledged(self) -> bool:
        """Whether the broker took every disposition sent; if not, those still queued are
        withdrawn, so the page's answer stays true."""
        if self.feedback.close(BROKER_WAIT_S) == 0:
            return True
        self.feedback.withdraw_queued()
        return False

    def lists_page(self, request: Request, error: str = "") -> Response:
        with Session(self.store) as session:
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            shown = sorted(set(lists.entries(self.redis).values()),
                           key=lambda e: e.added_at_ms, reverse=True)  # fmt: skip
            return self.page(request, "lists.html", user, entries=shown, kinds=lists.KINDS,
                             error=error)  # fmt: skip

    def lists_change(self, request: Request, form: FormData) -> Response:
        """Add (POST /lists) or withdraw (POST /lists/remove) an entry, signed and audited."""
        action, kind = str(form.get("action", "")), str(form.get("kind", ""))
        value = str(form.get("value", ""))
        if action not in ("block", "allow") or kind not in lists.KINDS:
            return PlainTextResponse("action: block or allow; kind: " + ", ".join(lists.KINDS), 400)
        removing = request.url.path.endswith("/remove")
        with Session(self.store) as session, session.begin():
            user = self.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            try:
                names = lists.names_of(kind, value, self.tokenizer)
                if removing:
                    lists.withdraw(self.redis, action, kind, names)  # type: ignore[arg-type]
                else:
                    lists.add(self.redis, _entry(form, names[0], user.name), names)
            except (lists.ListError, ValueError) as error:
                return self.lists_page(request, str(error))
            detail = {"action": action, "kind": kind, "names": len(names)}
            session.add(Audit(at=now(), user_id=user.id,
                              action="list remove" if removing else "list add",
                              subject=f"{kind}:{names[0]}", detail=detail))  # fmt: skip
        return RedirectResponse("/lists", 303)


class Steering:
    """The strategy page: the version in force, its history, a candidate validated (and its
    changes against the version in force) and backtested; published and rolled back by a
    lead."""

    def __init__(self, bench: Workbench) -> None:
        self.bench = bench
        self.runner = backtests.Runner(bench.store)

    def versions(self) -> list[strategy.Strategy]:
        return [strategy.default(), *feed.read_published(self.bench.settings).live]

    def render(self, request: Request, user: User, session: Session, **more: Any) -> Response:
        versions = self.versions()
        active = strategy.in_force(versions, int(time.time() * 1000)) or versions[0]
        try:
            target: int | None = strategy.rollback_target(versions, active)
        except strategy.StrategyError:
            target = None
        text = yaml.safe_dump(active.model_dump(mode="json"), sort_keys=False)
        recent = session.execute(
            select(Backtest, User.name).join(User, User.id == Backtest.user_id)
            .options(defer(Backtest.report)).order_by(Backtest.id.desc()).limit(10)
        ).all()  # fmt: skip
        context = {"problems": [], "changes": [], "message": "", "candidate": ""} | more
        return self.bench.page(request, "strategy.html", user, active=active, active_text=text,
                               versions=versions, rollback_to=target, backtests=recent,
                               days=7, **context)  # fmt: skip

    def page(self, request: Request) -> Response:
        with Session(self.bench.store) as session:
            user = self.bench.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            return self.render(request, user, session)

    def post(self, request: Request, form: FormData) -> Response:
        """Validate (anyone), backtest (anyone) or publish (a lead) the pasted candidate."""
        text, action = str(form.get("document", "")), str(form.get("do", "validate"))
        with Session(self.bench.store) as session, session.begin():
            user = self.bench.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            if action == "publish" and user.role is not Role.LEAD:
                return PlainTextResponse("publishing is for leads", 403)
            signals = load_signals(self.bench.settings.model.signals)
            try:
                candidate = strategy.parse(text, "the candidate")
            except strategy.StrategyError as error:
                return self.render(request, user, session, problems=str(error).splitlines(),
                                   candidate=text)  # fmt: skip
            problems = strategy.check(candidate, signals)
            versions = self.versions()
            active = strategy.in_force(versions, int(time.time() * 1000)) or versions[0]
            changes = strategy.diff(active, candidate)
            if problems or action not in ("publish", "backtest"):
                message = "" if problems else "valid: it may be backtested and published"
                return self.render(request, user, session, problems=problems, changes=changes,
                                   message=message, candidate=text)  # fmt: skip
            if action == "backtest":
                try:
                    days = _days(form.get("days"))
                except ValueError as error:
                    return self.render(request, user, session, problems=[str(error)],
                                       candidate=text)  # fmt: skip
                run, wanted = self.backtest(session, user, text, active, days)
                session.commit()  # the row exists before the worker can finish with it
                self.runner.submit(run, wanted)
                return RedirectResponse(f"/backtests/{run}", 303)
            try:
                published = feed.publish(self.bench.settings, candidate, signals)
            except (strategy.StrategyError, UserError) as error:
                return self.render(request, user, session, problems=[str(error)], candidate=text)
            session.add(Audit(at=now(), user_id=user.id, action="strategy publish",
                              subject=f"version {published.version}",
                              detail={"changes": changes}))  # fmt: skip
            return self.render(request, user, session,
                               message=f"published version {published.version}")  # fmt: skip

    def backtest(
        self, session: Session, user: User, text: str, active: strategy.Strategy, days: int
    ) -> tuple[int, backtests.Request]:
        """A backtest of the last ``days`` whole days (UTC), recorded and audited: its row's id
        and what the worker replays."""
        end = int(time.time() // 86_400 * 86_400 * 1000) + 86_400_000  # today included
        start = end - days * 86_400_000
        row = Backtest(user_id=user.id, requested_at=now(), first_day=_day(start),
                       end_day=_day(end), candidate=text)  # fmt: skip
        session.add(row)
        session.flush()
        session.add(Audit(at=now(), user_id=user.id, action="strategy backtest",
                          subject=f"backtest {row.id}", detail={"days": days}))  # fmt: skip
        settings = self.bench.settings
        return row.id, backtests.Request(
            registry=working_registry(settings.model.registry, settings.state_dir),
            lake=settings.lake_path, candidate=text, active=active.model_dump_json(),
            active_name=f"version {active.version} (in force)", start_ms=start, end_ms=end,
            maturity_days=settings.lake.label_maturity_days,
        )  # fmt: skip

    def rollback(self, request: Request, form: FormData) -> Response:
        """A lead restores the version the page offered, if the version in force is still the
        one the page showed (another lead may have moved it meanwhile)."""
        with Session(self.bench.store) as session, session.begin():
            user = self.bench.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            if user.role is not Role.LEAD:
                return PlainTextResponse("rolling back is for leads", 403)
            to, shown = _number(form.get("to")), _number(form.get("from"))
            versions = self.versions()
            active = strategy.in_force(versions, int(time.time() * 1000)) or versions[0]
            if to is None or shown != active.version:
                moved = f"version {active.version} is in force now: look again, then roll back"
                return self.render(request, user, session, problems=[moved])
            settings = self.bench.settings
            try:
                restored, published = feed.rollback(settings, load_signals(settings.model.signals),
                                                    to)  # fmt: skip
            except UserError as error:
                return self.render(request, user, session, problems=[str(error)])
            session.add(Audit(at=now(), user_id=user.id, action="strategy rollback",
                              subject=f"version {published.version}",
                              detail={"restores": restored}))  # fmt: skip
            return self.render(request, user, session, message=(
                f"version {restored} published again as version {published.version}"))  # fmt: skip

    def result(self, request: Request) -> Response:
        """A backtest: running (the page reloads itself), failed with its reason, or done
        with its report framed below."""
        with Session(self.bench.store) as session:
            user = self.bench.user(request, session)
            if user is None:
                return RedirectResponse("/login", 303)
            run = session.get(Backtest, request.path_params["backtest_id"])
            if run is None:
                return PlainTextResponse("no such backtest", 404)
            return self.bench.page(request, "backtest.html", user, run=run)

    def report(self, request: Request) -> Response:
        with Session(self.bench.store) as session:
            if self.bench.user(request, session) is None:
                return PlainTextResponse("sign in", 401)
            run = session.get(Backtest, request.path_params["backtest_id"])
            if run is None or run.report is None:
                return PlainTextResponse("no report (yet)", 404)
            framed = {"Content-Security-Policy": REPORT_POLICY, "X-Frame-Options": "SAMEORIGIN"}
            return HTMLResponse(run.report, headers=framed)


def _days(given: object) -> int:
    text = str(given or "7")
    if not (text.isdigit() and 1 <= int(text) <= backtests.DAYS_MAX):
        raise ValueError(f"days: 1 to {backtests.DAYS_MAX}")
    return int(text)


def _day(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_ms / 1000))


def _filtered(params: Any, user: User) -> Select[Case]:
    """The queue's query from its filters; a malformed one is a ValueError naming it."""
    order = Case.alerted_at.asc() if params.get("order") == "age" else Case.expected_loss.desc()
    query = select(Case).order_by(order)
    outcome = params.get("outcome", "")
    if outcome in LABELS:
        query = query.where(Case.outcome == outcome)
    elif outcome:
        raise ValueError("outcome: fraud or legit")
    else:
        query = query.where(Case.status != Status.CLOSED)
    if params.get("rule"):  # a reason containing it: "spike" finds rule:amount_spike
        reasons = cast(Case.reasons, String)
        query = query.where(reasons.contains(str(params["rule"])[:64], autoescape=True))
    if params.get("min_amount"):
        amount = float(params["min_amount"])  # a ValueError names nothing: said by the caller
        if not 0 <= amount < 1e12:
            raise ValueError("min_amount: a positive amount")
        query = query.where(Case.amount >= amount)
    if params.get("max_age_min"):
        minutes = _number(params["max_age_min"])
        if minutes is None:
            raise ValueError("max_age_min: whole minutes")
        query = query.where(Case.alerted_at >= int(time.time() * 1000) - minutes * 60_000)
    assignee = params.get("assignee", "")
    if assignee == "me":
        query = query.where(Case.assignee_id == user.id)
    elif assignee == "none":
        query = query.where(Case.assignee_id.is_(None))
    elif assignee:
        raise ValueError("assignee: me or none")
    return query


def _number(text: object) -> int | None:
    """A non-negative whole number as a form or a query gives it ("²" and 10**40 are not)."""
    value = str(text)
    return int(value) if re.fullmatch(r"[0-9]{1,15}", value) else None


def _entry(form: Any, value: str, by: str) -> lists.Entry:
    """The entry under its first name: a card's token, never its number."""
    added = int(time.time() * 1000)
    days = str(form.get("days") or "")
    if days and not (days.isdigit() and 1 <= int(days) <= 3650):
        raise ValueError("days: 1 to 3650, or empty for until removed")
    return lists.Entry(
        action=str(form["action"]), kind=str(form["kind"]),  # type: ignore[arg-type]
        value=value,
        reason=str(form.get("reason", "")), added_by=by, added_at_ms=added,
        expires_at_ms=added + int(days) * 86_400_000 if days else None,
    )  # fmt: skip


def _posted(
    handler: Callable[[Request, FormData], Response],
) -> Callable[[Request], Awaitable[Response]]:
    """A form's endpoint: its CSRF token checked, then its handler run off the event loop
    (the database, Redis, the broker and scrypt block)."""

    async def endpoint(request: Request) -> Response:
        form = await request.form()
        if not _csrf_ok(request, form.get("csrf")):
            return PlainTextResponse("the form expired: reload the page", 403)
        return await run_in_threadpool(handler, request, form)

    return endpoint


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def _csrf_ok(request: Request, given: object) -> bool:
    expected = request.session.get("csrf")
    return (
        isinstance(expected, str)
        and isinstance(given, str)
        and hmac.compare_digest(expected, given)
    )


class SecurityHeaders:
    """The usual headers on every reply (a plain ASGI middleware: streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)  # a reply may set its own (a report's CSP)
            await send(message)

        await self.app(scope, receive, sending if scope["type"] == "http" else send)


def create_app(
    settings: Settings, store: Engine, feedback: FeedbackProducer, health: Health | None = None
) -> Starlette:
    bench = Workbench(settings, store, feedback, health or Health())
    steering = Steering(bench)
    key = settings.workbench.session_key

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        steering.runner.close()  # a backtest still running ends with the page

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", bench.queue),
            Route("/login", bench.login_page, methods=["GET"]),
            Route("/login", _posted(bench.login), methods=["POST"]),
            Route("/logout", bench.logout, methods=["POST"]),
            Route("/cases/{case_id:id}", bench.case),
            Route("/cases/{case_id:id}/outcome", _posted(bench.outcome), methods=["POST"]),
            Route("/cases/{case_id:id}/assign", _posted(bench.assign), methods=["POST"]),
            Route("/chargeback", _posted(bench.chargeback), methods=["POST"]),
            Route("/events", bench.events),
            Route("/overview", bench.overview),
            Route("/lists", bench.lists_page, methods=["GET"]),
            Route("/lists", _posted(bench.lists_change), methods=["POST"]),
            Route("/lists/remove", _posted(bench.lists_change), methods=["POST"]),
            Route("/strategy", steering.page, methods=["GET"]),
            Route("/strategy", _posted(steering.post), methods=["POST"]),
            Route("/strategy/rollback", _posted(steering.rollback), methods=["POST"]),
            Route("/backtests/{backtest_id:id}", steering.result),
            Route("/backtests/{backtest_id:id}/report", steering.report),
            Route("/healthz", lambda _request: PlainTextResponse("ok")),
            Route("/readyz", bench.ready),
            Mount(
                "/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"
            ),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=key.get_secret_value() if key else secrets.token_hex(32),
                session_cookie="fraudstream_session",
                max_age=settings.workbench.session_minutes * 60,
                same_site="strict",
                https_only=settings.workbench.secure_cookies,
            ),
        ],
    )
