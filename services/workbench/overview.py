"""The overview's figures from the case store: closed cases per analyst (in the workbench or
by a label sent from elsewhere), the precision of alerts by rule and by score band, the
median time to a disposition."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.workbench.cases import Case, Status

BANDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # score bands' upper edges (alerts start near 0.5)


@dataclass(frozen=True)
class Precision:
    group: str
    fraud: int
    legit: int

    @property
    def share(self) -> float:
        return self.fraud / (self.fraud + self.legit) if self.fraud + self.legit else 0.0


@dataclass(frozen=True)
class Figures:
    days: int
    per_analyst: dict[str, int]
    by_rule: list[Precision]
    by_band: list[Precision]
    median_minutes: float | None


def figures(session: Session, days: int, now_ms: int) -> Figures:
    since = now_ms - days * 86_400_000
    closed = session.scalars(
        select(Case).where(Case.status == Status.CLOSED, Case.alerted_at >= since).limit(200_000)
    ).all()
    rules: dict[str, Counter[str]] = defaultdict(Counter)
    bands: dict[str, Counter[str]] = defaultdict(Counter)
    for case in closed:
        for rule in case.reasons or ["(model)"]:
            rules[rule][case.outcome or ""] += 1
        bands[_band(case.score)][case.outcome or ""] += 1
    waits = [
        (_utc(case.closed_at).timestamp() * 1000 - case.alerted_at) / 60_000
        for case in closed if case.closed_at is not None
    ]  # fmt: skip
    analysts = Counter(case.closed_by or "" for case in closed)
    return Figures(
        days=days,
        per_analyst=dict(analysts.most_common()),
        by_rule=sorted(
            (Precision(r, c["fraud"], c["legit"]) for r, c in rules.items()),
            key=lambda p: -(p.fraud + p.legit),
        ),
        by_band=[Precision(b, bands[b]["fraud"], bands[b]["legit"]) for b in sorted(bands)],
        median_minutes=statistics.median(waits) if waits else None,
    )


def _utc(at: datetime) -> datetime:
    """SQLite gives back stored UTC times without their zone: they are UTC, not local."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _band(score: float) -> str:
    upper = next(edge for edge in BANDS if score <= edge)
    lower = max((edge for edge in BANDS if edge < upper), default=0.0)
    return f"{lower:.1f}-{upper:.1f}"
