"""Kafka plumbing shared by every component: topic creation and a reader that owns its partitions.

Everything is confluent-kafka (librdkafka), configured by ``services.core.kafka_config``. The
reader assigns partitions itself instead of joining a consumer group, so it starts at once (a
group join on Tansu can take seconds) and reads until a condition holds rather than trusting a
broker's 'latest' offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka import Consumer as _Consumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.core.errors import UserError
from services.core.kafka_config import librdkafka, librdkafka_consumer
from services.core.settings import Settings


def topic_partitions(settings: Settings, keyed: int | None = None) -> dict[str, int]:
    """Partitions per topic: ``keyed`` (default: the stack's setting) for the transactions and
    the topics keyed alike, one for the others."""
    keyed = keyed or settings.stack.partitions
    return {
        settings.topic.transactions: keyed,
        settings.topic.dlq: 1,
        settings.topic.decisions: keyed,
        settings.topic.alerts: keyed,
        settings.topic.feedback: 1,
        settings.topic.feedback_dlq: 1,
        settings.topic.labels: 1,
        settings.topic.strategy: 1,
        settings.topic.chargebacks: 1,
    }


class TopicsError(UserError, RuntimeError):
    """The pipeline's topics could not be made or seen: the message says which and why."""


COMPACTED = {"cleanup.policy": "compact"}  # a topic that keeps the latest value of each key


def create_topics(
    settings: Settings, timeout: float = 30.0, partitions: int | None = None, replication: int = 1
) -> dict[str, int]:
    """Create the pipeline's topics (existing ones are kept) and wait until all are visible."""
    admin = AdminClient(librdkafka(settings.kafka))
    wanted = topic_partitions(settings, partitions)
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=parts,
                replication_factor=replication,
                config=COMPACTED if name == settings.topic.strategy else {},
            )
            for name, parts in wanted.items()
        ]
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicsError(f"cannot create topic {name}: {error.args[0].str()}") from None
    deadline = time.monotonic() + timeout
    while True:
        present = admin.list_topics(timeout=timeout).topics
        if all(name in present for name in wanted):
            return {name: len(present[name].partitions) for name in wanted}
        if time.monotonic() > deadline:
            raise TopicsError(f"topics not visible after {timeout:.0f} s: {sorted(wanted)}")
        time.sleep(0.1)


def assigned_consumer(
    settings: Settings,
    topics: Sequence[str],
    start: int | Callable[[str, int], int] = OFFSET_BEGINNING,
    group: str = "fraudstream-reader",
) -> _Consumer:
    """A consumer owning every partition of ``topics`` from ``start`` (an offset, or one per
    topic and partition): no group join to wait for, no committed offsets."""
    consumer = _Consumer(
        librdkafka_consumer(settings.kafka)
        | {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            # An offset retention deleted resumes at the oldest kept, never past what is left.
            "auto.offset.reset": "earliest",
        }
    )
    start_at = start if callable(start) else lambda _topic, _partition: start
    consumer.assign([
        TopicPartition(topic, p, start_at(topic, p))
        for topic in topics
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ])  # fmt: skip
    return consumer


def read_topic(
    settings: Settings,
    topic: str,
    stop: Callable[[int], bool],
    timeout: float,
) -> Iterator[Message]:
    """Yield a topic's messages from the beginning until ``stop(count)`` or ``timeout``.

    Assigns every partition directly (no group join, no committed offsets). The caller decides
    when it has read enough: an exact count, a marker message, or simply the deadline.
    """
    consumer = assigned_consumer(settings, [topic])
    try:
        count = 0
        deadline = time.monotonic() + timeout
        while not stop(count) and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=0.2):
                if message.error():
                    continue
                count += 1
                yield message
    finally:
        consumer.close()


def topic_epochs(
    settings: Settings, topics: Sequence[str], timeout: float = 10.0
) -> dict[str, str]:
    """Each topic's incarnation: its topic id, new whenever the topic is created again (a
    fresh in-memory broker, a deleted and re-created topic), so stored offsets can name it."""
    admin = AdminClient(librdkafka(settings.kafka))
    cluster = admin.list_topics(timeout=timeout).cluster_id or ""
    epochs = {}
    for name, future in admin.describe_topics(TopicCollection(list(topics))).items():
        topic_id = str(future.result(timeout).topic_id)
        epochs[name] = topic_id if topic_id.strip("A=") else cluster  # no id: the cluster's
    return epochs
