"""A rule published while the real PyFlink job runs: the events from its effective time on
are decided by it, earlier ones (late arrivals among them) are not, and a replay by a fresh job
decides every event by the same version."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from services.clients.producer import TransactionProducer
from services.core import kafka
from services.core.contract import Decision, Transaction
from services.core.settings import Settings
from services.devstack import processes, stack
from tests.integration.streaming import DecisionTail, running_stack

RULE = """
rules:
  - {id: over_ten, when: "amount_usd > 10.0", outcome: review}
thresholds: {mode: model}
"""


def _tx(i: int, event_time_ms: int) -> Transaction:
    return Transaction(
        transaction_id=f"live-{i}",
        event_time=event_time_ms,
        card_id=f"card-{i % 40}",
        customer_id=f"cust-{i % 40}",
        merchant_id=f"m-{i % 9}",
        merchant_category="5411",
        amount=5.0 + i % 30,
        currency="USD",
        country="US",
        channel="ecommerce",
    )


def _send(settings: Settings, txs: list[Transaction]) -> None:
    with TransactionProducer(settings) as producer:
        for tx in txs:
            producer.send(tx)
        assert producer.flush().failed == 0


def _by_version(decisions: list[Decision]) -> dict[str, tuple[int, bool]]:
    first: dict[str, tuple[int, bool]] = {}
    for d in decisions:  # the first decision of a transaction is the one that counts
        first.setdefault(d.transaction_id, (d.strategy_version, "rule:over_ten" in d.reasons))
    return first


def test_a_rule_published_while_the_job_runs_decides_from_its_effective_time(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path / "state") as settings:
        at = (int(time.time()) + 290) * 1000  # a whole second: ``--at`` gives seconds
        base = at - 50_000  # the events ahead of the clock, within the 600 s allowed
        before = [_tx(i, base + i * 250) for i in range(200)]  # base .. base + 50 s
        after = [_tx(i, base + i * 250) for i in range(200, 400)]  # base + 50 s .. + 100 s
        late = [_tx(i, base + (i - 400) * 250) for i in range(400, 440)]  # dated before `at`
        job = stack.start_job(settings, tmp_path / "logs")
        tail = DecisionTail(settings)
        try:
            _send(settings, before)
            tail.wait_for(200, 240, "decisions before the publication")
            rule = tmp_path / "rule.yaml"
            rule.write_text(RULE)
            published = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "rules",
                    "publish",
                    str(rule),
                    "--at",
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000)),
                ],
                env=settings.child_environment(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert published.returncode == 0, published.stderr
            _send(settings, after + late)
            first = _by_version(tail.wait_for(440, 120, "decisions after the publication"))
        finally:
            tail.close()
            processes.stop(job)
        for tx in before + after + late:
            version, fired = first[tx.transaction_id]
            in_force = tx.event_time_ms >= at
            assert version == (1 if in_force else 0), tx
            assert fired == (in_force and tx.amount > 10.0), tx
        assert sum(v for v, _ in first.values()) == 200  # the 200 events from `at` on
        assert any(f for _, f in first.values())  # the rule fired: not vacuous

        replay = settings.updated(
            {
                "job_group_id": "replay",
                "topic_decisions": "replayed",
                "topic_alerts": "replayed-alerts",
            }
        )
        kafka.create_topics(replay)
        job = stack.start_job(replay, tmp_path / "logs", "replay")
        tail = DecisionTail(replay)
        try:
            again = _by_version(tail.wait_for(440, 240, "the replay's decisions"))
        finally:
            tail.close()
            processes.stop(job)
        assert again == first
