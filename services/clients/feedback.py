"""The analysts' client: dispositions to ``alert-feedback``, keyed by transaction id, and
re-sending the dead letters of ``alert-feedback.dlq`` once their cause is fixed."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from services.core.contract import DeadLetter, Feedback, Label, decode_or_none, encode
from services.core.kafka_config import librdkafka, librdkafka_consumer
from services.core.settings import Settings

REDRIVE_GROUP = "fraudstream-redrive"  # its committed offsets: what was re-sent already
_letter = msgspec.json.Decoder(DeadLetter)


class FeedbackProducer:
    """An idempotent producer of dispositions; :meth:`close` waits for the acknowledgements."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(librdkafka(settings.kafka) | {"enable.idempotence": True})
        self._topic = settings.topic.feedback

    def send(
        self, transaction_id: str, label: Label, analyst: str, note: str = "",
        event_time: int | None = None, at: int | None = None,
    ) -> Feedback:  # fmt: skip
        """``event_time``: when the transaction happened, if known (a chargeback's date);
        ``at``: when the label was given (default: now; a chargeback's arrival)."""
        feedback = Feedback(
            transaction_id=transaction_id, label=label, analyst=analyst,
            time=int(time.time() * 1000) if at is None else at, note=note, event_time=event_time,
        )  # fmt: skip
        self.send_raw(transaction_id.encode(), encode(feedback))
        return feedback

    def send_raw(self, key: bytes | None, value: bytes, topic: str | None = None) -> None:
        self._producer.produce(topic or self._topic, value, key)
        self._producer.poll(0)

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush; the number of dispositions the broker did not acknowledge in time."""
        return int(self._producer.flush(timeout_s))

    def withdraw_queued(self) -> None:
        """Drop the dispositions not yet handed to the broker (one in flight may still land):
        a caller that reported a failure does not send them minutes later."""
        self._producer.purge(in_queue=True, in_flight=False)
        self._producer.poll(0)


@dataclass(frozen=True)
class Redriven:
    sent: int  # dispositions sent to alert-feedback again
    incomplete: int  # dead letters whose raw bytes were cut or masked: not sendable as they were
    unacknowledged: int


def redrive(settings: Settings, from_beginning: bool = False, idle_s: float = 3.0) -> Redriven:
    """Send each dead letter of ``alert-feedback.dlq`` not re-sent before (this command's
    committed offsets; ``from_beginning``: all of them) back to its topic (``alert-feedback``
    or ``chargebacks``), byte for byte. One that fails again is a dead letter again."""
    topic = settings.topic.feedback_dlq
    consumer = Consumer(librdkafka_consumer(settings.kafka) | {
        "group.id": REDRIVE_GROUP, "enable.auto.commit": False,
        "enable.partition.eof": False,
    })  # fmt: skip
    partitions = [TopicPartition(topic, p) for p in
                  consumer.list_topics(topic, timeout=10).topics[topic].partitions]  # fmt: skip
    starts = consumer.committed(partitions, timeout=10)
    consumer.assign([TopicPartition(topic, tp.partition,
                                    OFFSET_BEGINNING if from_beginning or tp.offset < 0
                                    else tp.offset) for tp in starts])  # fmt: skip
    producer = FeedbackProducer(settings)
    resendable = (settings.topic.feedback, settings.topic.chargebacks)
    sent = incomplete = 0
    done: dict[int, int] = {}
    started_ms, stopped = int(time.time() * 1000), set[int]()
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s and len(stopped) < len(partitions):
            for message in consumer.consume(1_000, timeout=0.2):
                partition = message.partition() or 0
                if message.error() or partition in stopped:
                    continue
                last = time.monotonic()
                letter = decode_or_none(_letter, message.value() or b"")
                if letter is not None and letter.failed_at >= started_ms:
                    stopped.add(partition)  # failed again since this run began: next run's
                    continue
                if letter is not None and _whole(letter):  # back where it came from
                    back = letter.source_topic
                    producer.send_raw(letter.key, letter.raw,
                                      back if back in resendable else None)  # fmt: skip
                    sent += 1
                else:
                    incomplete += 1
                done[partition] = (message.offset() or 0) + 1
        unacknowledged = producer.close()
        if done and not unacknowledged:
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in done.items()],
                            asynchronous=False)  # fmt: skip
    finally:
        consumer.close()
    return Redriven(sent, incomplete, unacknowledged)


def _whole(letter: DeadLetter) -> bool:
    """The dead letter holds its message whole and unaltered (no cut, no masked digits)."""
    return hashlib.sha256(letter.raw).hexdigest() == letter.raw_sha256
