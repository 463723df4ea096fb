"""The producer client: transactions to Kafka, keyed by card_id, every acknowledgement counted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from services.core.contract import Transaction, encode
from services.core.kafka_config import librdkafka
from services.core.settings import Settings
from services.core.signals import load_signals


@dataclass
class DeliveryReport:
    """Counts from the broker's acknowledgements; ``errors`` keeps the first few reasons."""

    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class TransactionProducer:
    """An idempotent producer of transactions, keyed by card_id, counting every acknowledgement.

    Use as a context manager (flushes on exit) or call :meth:`flush`; ``send`` never blocks
    for long: when librdkafka's queue is full it serves callbacks until there is room.
    """

    def __init__(
        self, settings: Settings, topic: str | None = None, config: Mapping[str, Any] | None = None
    ) -> None:
        """``config``: librdkafka settings over this producer's own."""
        conf = librdkafka(settings.kafka) | {
            "enable.idempotence": True,  # acks=all, no duplicates or reordering on retry
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
        self._producer = Producer(conf | dict(config or {}))
        self._tokens = settings.token.tokenizer()
        self._personal = load_signals(settings.model.signals).personal
        self.topic = topic or settings.topic.transactions
        self.report = DeliveryReport()

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.report.delivered += 1
        else:
            self.report.failed += 1
            if len(self.report.errors) < 10:
                self.report.errors.append(error.str())

    def send(self, transaction: Transaction) -> None:
        """Queue one transaction (validated by construction), its identifiers tokenized, keyed
        by its card's token: no card number, personal id or personal attribute (the signals
        file's) leaves this process in clear."""
        published = self._tokens.transaction(transaction, self._personal)
        self.send_raw(published.card_id.encode(), encode(published))

    def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Queue bytes as they are, untokenized (tests of the dead-letter path; a replay of
        what this producer published before)."""
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> DeliveryReport:
        """Wait for every queued message's acknowledgement (or ``timeout``); return the counts."""
        remaining = self._producer.flush(timeout)
        if remaining:
            self.report.failed += remaining
            self.report.errors.append(f"{remaining} messages not acknowledged in {timeout:.0f} s")
        return self.report

    def __enter__(self) -> TransactionProducer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.flush()
