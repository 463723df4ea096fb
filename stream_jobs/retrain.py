"""``fraudstream retrain``: the model's whole renewal as one resumable pipeline.

A run goes through these steps, each recorded in ``REGISTRY/retrain.json`` before the next
begins, so a run killed anywhere resumes where it stopped (a CronJob simply runs it again):

1. **train**: the lake's transactions of ``window_days`` before the label-maturity cutoff (only
   matured labels: an unlabelled transaction that old is legit), their features computed with
   the history before the window in place; a time split for validation. The candidate is
   published with its model card (``model_card.html``) and the run's id in its metadata. A
   run that died after publishing finds its version by that id instead of training again:
   one run publishes exactly one version.
2. **evaluate**: candidate and champion scored on the candidate's evaluation split (the latest
   rows, which it did not train on); a candidate worse by more than the tolerance is refused.
3. **shadow**: the candidate becomes the registry's ``SHADOW``: the scoring service scores it
   beside the champion, and every decision records both scores (the decision ledger).
4. **judge**: ``models compare`` on the shadow's decisions whose labels have matured, once
   there are ``shadow_days`` of them (up to ``max_shadow_days`` while fewer than ``min_fraud``
   fraud labels are among them, then undecided). Promoted if no worse: its PR-AUC difference
   is at least 0 and the low end of its 95 % interval above minus the tolerance
   (non-inferiority). A candidate that loses stays the shadow, not promoted.

A run ends ``superseded`` when the current version changes under it, and ``failed`` when a
step raises (recorded, then raised): the next run starts afresh. A finished run is followed by
a new one ``every_days`` after it started.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from models.errors import PromotionRefused
from models.training import datasets
from models.training.explain import PathExplainer
from models.training.metrics import evaluate
from models.training.registry import Registry
from models.training.trainer import (
    Matrix,
    TrainConfig,
    feature_matrix,
    pr_curve_png,
    scores_for,
    time_split,
    train,
)  # fmt: skip
from services.core.settings import RetrainSettings
from services.core.signals import EMPTY, Signals
from stream_jobs import backtest as bt
from stream_jobs import compare
from stream_jobs.model_card import render as model_card
from stream_jobs.strategy import Thresholds

Step = Literal["train", "evaluate", "shadow", "judge", "promoted", "refused", "lost",
               "undecided", "superseded", "failed"]  # fmt: skip
FINAL: Final = frozenset({"promoted", "refused", "lost", "undecided", "superseded", "failed"})
STATE: Final = "retrain.json"
ATTEMPTS: Final = 3  # a step that fails (or is killed) this often in a row ends the run
DAY_MS: Final = bt.DAY_MS


class RetrainError(ValueError):
    """The run cannot go on: the message says why (the run stays where it was)."""


class Entry(msgspec.Struct):
    at: int
    step: str
    message: str


class Run(msgspec.Struct):
    id: str
    as_of: int  # the run's clock for its data: a resumed run trains on the same window
    step: Step
    champion: str | None
    window: list[int]  # [from, to) event time, ms
    candidate: str | None = None
    shadow_since: int | None = None
    evaluation: dict[str, Any] = {}
    judgement: dict[str, Any] = {}
    attempts: int = 0  # of the current step, counted before it runs: a killed one counts too
    log: list[Entry] = []


class State(msgspec.Struct):
    run: Run | None = None
    finished: list[Run] = []


def _load(registry: Registry) -> State:
    path = registry.root / STATE
    return msgspec.json.decode(path.read_bytes(), type=State) if path.is_file() else State()


def _save(registry: Registry, state: State) -> None:
    path = registry.root / STATE
    tmp = path.with_name(f".{STATE}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(state)) + b"\n")
    os.replace(tmp, path)


@contextmanager
def _exclusive(registry: Registry) -> Iterator[None]:
    """One run at a time per registry (a second waits for none: it is refused)."""
    registry.root.mkdir(parents=True, exist_ok=True)
    with (registry.root / "retrain.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainError("another retrain run holds this registry") from None
        yield


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


class Pipeline:
    """Runs the steps for one registry and lake; ``now`` is the clock (tests move it)."""

    def __init__(
        self,
        registry: Registry,
        lake: Path,
        policy: RetrainSettings,
        maturity_days: float,
        thresholds: Thresholds,
        now: Callable[[], int] = lambda: int(time.time() * 1000),
        say: Callable[[str], None] = lambda _: None,
        config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
    ) -> None:
        self.registry, self.lake, self.policy = registry, lake, policy
        self.maturity_days = maturity_days
        self._data: tuple[str, datasets.Dataset, Matrix] | None = None  # a run's, computed once
        self.thresholds, self.now, self.say, self.config = thresholds, now, say, config

    def run(self, stop_after: Step | None = None) -> Run | None:
        """Start a run (unless the last one started less than ``every_days`` ago) or resume
        the unfinished one; go as far as the clock allows. A step that fails ends the run as
        ``failed``, recorded, and raises: the next run starts afresh, on a new window."""
        with _exclusive(self.registry):
            state = _load(self.registry)
            if state.run is None:
                if (wait := self._rested(state)) is not None:
                    self.say(wait)
                    return None
                state.run = self._start()
                _save(self.registry, state)
            run = state.run
            steps: dict[str, Callable[[Run], Step | None]] = {
                "train": self._train, "evaluate": self._evaluate, "shadow": self._shadow,
                "judge": self._judge,
            }  # fmt: skip
            while run.step not in FINAL:
                done = run.step
                run.attempts += 1  # saved first: an out-of-memory kill or a timeout counts too
                _save(self.registry, state)
                try:
                    following = self._attempt(run, steps[run.step])
                except Exception as error:
                    self._failed(state, run, f"{type(error).__name__}: {error}")
                    raise RetrainError(f"run {run.id}, step {done} (attempt {run.attempts} of "
                                       f"{ATTEMPTS}): {error}") from error  # fmt: skip
                run.attempts = 0
                if following is None:  # waiting for the clock or for labels
                    _save(self.registry, state)  # with the log's new line
                    break
                self._finish(state, run, following)
                if done == stop_after:
                    break
            return run

    def _attempt(self, run: Run, step: Callable[[Run], Step | None]) -> Step | None:
        """The step, unless it has failed or been killed ``ATTEMPTS`` times: then the run
        ends ``failed``, and the next starts afresh on a new window."""
        if run.attempts > ATTEMPTS:
            run.attempts = ATTEMPTS  # killed each time: this one ends it
            raise RetrainError(f"{ATTEMPTS} attempts were killed before they finished")
        return step(run)

    def _failed(self, state: State, run: Run, why: str) -> None:
        """Record a failure; the last attempt ends the run and its candidate's shadowing."""
        run.log.append(Entry(self.now(), run.step, f"attempt {run.attempts} failed: {why}"))
        if run.attempts >= ATTEMPTS:
            self._unshadow(run)
            self._finish(state, run, "failed")
        else:
            _save(self.registry, state)  # the step is tried again at the next run
        self.say(f"{run.log[-1].step}: {run.log[-1].message}")

    def _finish(self, state: State, run: Run, step: Step) -> None:
        run.step = step
        if step in FINAL:
            state.finished.append(run)
            state.run = None
        _save(self.registry, state)

    def _rested(self, state: State) -> str | None:
        """Why no run starts now: the last one started less than ``every_days`` ago."""
        if not state.finished or state.finished[-1].step == "failed":
            return None  # a failed run is tried again at once, on a new window
        next_at = state.finished[-1].as_of + int(self.policy.every_days * DAY_MS)
        if self.now() >= next_at:
            return None
        return (
            f"the last run started {_day(state.finished[-1].as_of)}: the next from {_day(next_at)}"
        )

    def _note(self, run: Run, message: str) -> None:
        run.log.append(Entry(self.now(), run.step, message))
        self.say(f"{run.step}: {message}")

    def _start(self) -> Run:
        now = self.now()
        cutoff = now - int(self.maturity_days * DAY_MS)
        window = [cutoff - int(self.policy.window_days * DAY_MS), cutoff]
        run = Run(id=uuid.uuid4().hex[:12], as_of=now, step="train",
                  champion=self.registry.current(), window=window)  # fmt: skip
        self._note(run, f"started: data {_day(window[0])} .. {_day(window[1])} (labels matured), "
                        f"champion {run.champion or 'none'}")  # fmt: skip
        return run

    # ---- train ---------------------------------------------------------------------------

    def _published(self, run: Run) -> str | None:
        """The version this run published before it was interrupted, if any."""
        for version in reversed(self.registry.versions()):
            if self.registry.metadata(version).get("retrain", {}).get("run") == run.id:
                return version
        return None

    def _dataset(self, run: Run) -> tuple[datasets.Dataset, Matrix]:
        """The window's rows and their features, computed with the ``HISTORY_DAYS`` before
        the window in place (as the job had them: no card or merchant starts cold)."""
        if self._data is not None and self._data[0] == run.id:
            return self._data[1], self._data[2]
        loaded = datasets.load(self.lake, None, self._signals(run.champion))
        times = loaded.frame["event_time"].to_numpy()
        lead = run.window[0] - bt.HISTORY_DAYS * DAY_MS
        frame = loaded.frame[(times >= lead) & (times < run.window[1])]
        frame = frame.sort_values("event_time", kind="stable").reset_index(drop=True)
        x = feature_matrix(dataclasses.replace(loaded, frame=frame))
        inside = frame["event_time"].to_numpy() >= run.window[0]
        chosen = frame[inside].reset_index(drop=True)
        if chosen.empty or not chosen["is_fraud"].any():
            raise RetrainError(f"the lake has no fraud label between {_day(run.window[0])} and "
                               f"{_day(run.window[1])}: nothing to learn from yet")  # fmt: skip
        dataset = dataclasses.replace(loaded, frame=chosen)
        self._data = (run.id, dataset, x[inside])
        return dataset, x[inside]

    def _signals(self, version: str | None) -> Signals:
        if version is None:
            return EMPTY
        return Signals.model_validate(self.registry.metadata(version).get("signals", {}))

    def _train(self, run: Run) -> Step:
        found = self._published(run)
        if found is not None:
            run.candidate = found
            self._note(run, f"{found} was published before the run stopped: kept")
            return "evaluate"
        dataset, x = self._dataset(run)
        trained = train(dataset, self.config, x=x)
        previous = run.champion and self.registry.metadata(run.champion)
        metadata = {**trained.metadata, "retrain": {"run": run.id, "window": run.window}}
        png = pr_curve_png(trained.eval_labels, trained.eval_scores, "the lake: evaluation")
        files = {
            "model.onnx": trained.onnx,
            "model.txt": trained.booster.model_to_string().encode(),
            "explainer.npz": PathExplainer.build(trained.booster, dataset.feature_names).to_bytes(),
            "pr_curve.png": png,
        }

        def card(meta: dict[str, Any]) -> dict[str, bytes]:
            return {"model_card.html": model_card(meta, trained, x, previous or None).encode()}

        run.candidate = self.registry.publish(files, metadata, card)
        self._note(run, f"{run.candidate} published: {len(dataset.frame):,} transactions, PR-AUC "
                        f"{trained.metrics.pr_auc:.4f} on its evaluation split")  # fmt: skip
        return "evaluate"

    # ---- evaluate ------------------------------------------------------------------------

    def _evaluate(self, run: Run) -> Step:
        assert run.candidate is not None
        if run.champion is None:  # the registry had no model: this one serves at once
            if self.registry.current() is None:
                self.registry.promote(run.candidate)
            if self.registry.current() == run.candidate:
                self._note(run, f"{run.candidate} promoted: the registry had no model")
                return "promoted"
        if (moved := self._superseded(run)) is not None:
            return moved
        assert run.champion is not None  # current, and the run's champion
        dataset, features = self._dataset(run)
        meta = self.registry.metadata(run.candidate)
        rows = time_split(dataset.frame["event_time"], TrainConfig(**meta["config"])).evaluation
        x, y = features[rows], dataset.frame["is_fraud"].to_numpy(bool)[rows]
        figures = {}
        for role, version in (("candidate", run.candidate), ("champion", run.champion)):
            names = self.registry.metadata(version)["feature_names"]
            if names != list(dataset.feature_names):
                raise RetrainError(f"{version} reads other features than {run.candidate}")
            onnx = (self.registry.path(version) / "model.onnx").read_bytes()
            figures[role] = evaluate(y, scores_for(x, onnx)).pr_auc
        run.evaluation = {"rows": len(rows), "fraud": int(y.sum()), "pr_auc": figures}
        ours, theirs = figures["candidate"], figures["champion"]
        verdict = f"PR-AUC {ours:.4f} against {run.champion}'s {theirs:.4f} on the same rows"
        if ours < theirs - self.policy.tolerance:
            self._note(run, f"refused: {verdict}")
            return "refused"
        self._note(run, verdict)
        return "shadow"

    # ---- shadow and judge ----------------------------------------------------------------

    def _shadow(self, run: Run) -> Step:
        assert run.candidate is not None
        self.registry.set_shadow(run.candidate)
        run.shadow_since = self.now()
        self._note(run, f"{run.candidate} is the shadow: the scoring service scores it beside "
                        f"{run.champion}")  # fmt: skip
        return "judge"

    def _superseded(self, run: Run) -> Step | None:
        """The run ends if someone moved the current version meanwhile: it would judge
        against a champion no longer in service, and promote over their choice."""
        current = self.registry.current()
        if current == run.champion:
            return None
        self._note(run, f"superseded: the current version is {current}, not {run.champion}")
        self._unshadow(run)
        return "superseded"

    def _judge(self, run: Run) -> Step | None:
        assert run.candidate is not None
        assert run.shadow_since is not None
        if self.registry.current() == run.candidate:  # promoted before the run recorded it
            self._unshadow(run)
            self._note(run, f"{run.candidate} is current already: promoted")
            return "promoted"
        if (moved := self._superseded(run)) is not None:
            return moved
        assert run.champion is not None
        now = self.now()
        # The shadow's decisions whose labels have matured, at most max_shadow_days of them.
        longest = run.shadow_since + int(self.policy.max_shadow_days * DAY_MS)
        end = min(now - int(self.maturity_days * DAY_MS), longest)
        days = max(end - run.shadow_since, 0) / DAY_MS  # for messages: decisions in ms
        if end - run.shadow_since < int(self.policy.shadow_days * DAY_MS):
            self._note(run, f"in shadow: {days:.1f} of {self.policy.shadow_days:g} days judged "
                            f"(labels mature after {self.maturity_days:g} days)")  # fmt: skip
            return None
        window = bt.Range(run.shadow_since, end)
        try:
            result = compare.report(self.registry, run.champion, run.candidate, self.lake,
                                    window, self.thresholds, self.maturity_days,
                                    as_of_ms=now)  # fmt: skip
        except bt.BacktestError as error:
            result = {"fraud": 0, "error": str(error)}
        if result["fraud"] < self.policy.min_fraud:
            message = (f"{result['fraud']} fraud labels among the shadow's {days:.0f} days of "
                       f"decisions, {self.policy.min_fraud} needed")  # fmt: skip
            if end < longest:
                self._note(run, f"waiting: {message}")
                return None
            self._note(run, f"undecided: {message}")
            return "undecided"
        figure = result["pr_auc"]
        run.judgement = {k: result[k] for k in ("rows", "fraud", "pr_auc", "recall_at_budget",
                                                "cost_usd", "ece", "brier", "sources")}  # fmt: skip
        difference, (low, _) = figure["difference"]["value"], figure["difference"]["ci95"]
        if difference is None or low is None:
            self._note(run, "undecided: the PR-AUC is undefined on these decisions")
            return "undecided"
        verdict = (f"PR-AUC {figure['b']['value']:.4f} against {figure['a']['value']:.4f} on "
                   f"{result['rows']:,} decisions, difference {difference:+.4f} "
                   f"(95 %: {low:+.4f} ..)")  # fmt: skip
        if difference < 0 or low <= -self.policy.tolerance:
            self._note(run, f"lost, stays the shadow: {verdict}")
            return "lost"
        if (moved := self._superseded(run)) is not None:  # moved while it was judged
            return moved
        try:
            self.registry.promote(run.candidate, self.policy.tolerance, False,
                                  figure["b"]["value"], figure["a"]["value"])  # fmt: skip
        except PromotionRefused as refused:
            self._unshadow(run)
            self._note(run, f"refused at promotion: {refused}")
            return "refused"
        self._unshadow(run)
        self._note(run, f"promoted: {verdict}")
        return "promoted"

    def _unshadow(self, run: Run) -> None:
        """Clear SHADOW if it is still this run's candidate (not one set since by hand)."""
        if run.candidate is not None and self.registry.shadow() == run.candidate:
            self.registry.set_shadow(None)


def as_json(run: Run) -> str:
    return msgspec.json.encode(run).decode()


def status(registry: Registry) -> dict[str, Any]:
    """The run in flight and the finished ones, JSON-able."""
    loaded: dict[str, Any] = json.loads(msgspec.json.encode(_load(registry)))
    return loaded
