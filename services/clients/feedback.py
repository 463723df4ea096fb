"""The analysts' client: dispositions of alerts to ``alert-feedback``, keyed by transaction id."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from services.core.contract import Feedback, Label, encode
from services.core.kafka_config import librdkafka
from services.core.settings import Settings


class FeedbackProducer:
    """An idempotent producer of dispositions; :meth:`close` waits for the acknowledgements."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(librdkafka(settings.kafka) | {"enable.idempotence": True})
        self._topic = settings.topic.feedback

    def send(self, transaction_id: str, label: Label, analyst: str, note: str = "") -> Feedback:
        feedback = Feedback(
            transaction_id=transaction_id, label=label, analyst=analyst,
            time=int(time.time() * 1000), note=note,
        )  # fmt: skip
        self._producer.produce(self._topic, encode(feedback), transaction_id.encode())
        self._producer.poll(0)
        return feedback

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush; the number of dispositions the broker did not acknowledge in time."""
        return int(self._producer.flush(timeout_s))
