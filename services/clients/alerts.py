"""Following the ``alerts`` topic as an analyst: no consumer group (nothing to join or
commit), every partition from the end (or the beginning), repeats dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from services.clients.reading import Deduplicator
from services.core.contract import Alert, decode_or_none
from services.core.kafka import assigned_consumer
from services.core.settings import Settings

IDLE_S = 3.0
_decoder = msgspec.json.Decoder(Alert)


def follow_alerts(
    settings: Settings, follow: bool, from_beginning: bool
) -> Iterator[tuple[Alert, str]]:
    """Alerts with their raw JSON; until interrupted with ``follow``, else until idle."""
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer = assigned_consumer(settings, [settings.topic.alerts], start, "fraudstream-analyst")
    seen = Deduplicator()
    last = time.monotonic()
    try:
        while follow or time.monotonic() - last < IDLE_S:
            for message in consumer.consume(1_000, timeout=0.5):
                if message.error():
                    continue
                last = time.monotonic()
                raw = message.value() or b""
                alert = decode_or_none(_decoder, raw)
                if alert is None:
                    continue
                if seen.first_time(alert.transaction_id):
                    yield alert, raw.decode()
    finally:
        consumer.close()
