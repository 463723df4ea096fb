"""`fraudstream topics create` on Apache Kafka, where topic configurations are real: every
topic made, the strategy topic compacted, a second run changes nothing, an impossible
replication factor is one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from tests.integration.streaming import running_stack


def topics(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.cli", "topics", "create", *args]
    return subprocess.run(
        argv,
        env=settings.child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_topics_are_made_once_with_the_strategy_topic_compacted(tmp_path: Path) -> None:
    with running_stack(tmp_path / "state", broker="kafka") as stack:
        settings = stack.updated(
            {
                "topic_transactions": "tx-7",
                "topic_strategy": "strategy-7",
                "topic_decisions": "decisions-7",
            }
        )
        done = topics(settings, "--partitions", "7", "--json")
        assert done.returncode == 0, done.stderr
        made = json.loads(done.stdout)
        assert made["tx-7"] == made["decisions-7"] == 7
        assert made["strategy-7"] == 1
        admin = AdminClient(librdkafka(settings.kafka))
        resources = [ConfigResource("topic", "strategy-7"), ConfigResource("topic", "tx-7")]
        configs = {r.name: f.result(30) for r, f in admin.describe_configs(resources).items()}
        assert configs["strategy-7"]["cleanup.policy"].value == "compact"
        assert configs["tx-7"]["cleanup.policy"].value == "delete"  # the negative control
        again = topics(settings, "--partitions", "3", "--json")  # kept as they are
        assert again.returncode == 0
        assert json.loads(again.stdout) == made
        refused = topics(
            settings.updated({"topic_transactions": "tx-8"}), "--replication-factor", "3"
        )
        assert refused.returncode == 1
        assert "cannot create topic tx-8" in refused.stderr
        assert "Traceback" not in refused.stderr
