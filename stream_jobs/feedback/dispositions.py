"""What one analyst disposition changes, free of faust so the app and the tests share it.

Every write is idempotent and the transaction's latest label wins: merchant fraud counts move
only when a transaction's label changes (``record_label`` keeps the label it counted), a
card's label history is a hash keyed by transaction id, a ``fraud`` blocklists the card and
device (if not already) and a later ``legit`` lifts the entries that transaction created. A
redelivered or repeated message changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from models import redis_layout as layout
from models.online import OnlineFeatureStore
from services.core.contract import Alert, Feedback, InvalidEvent, decode_feedback, decode_or_none
from services.core.settings import RedisClient

ALERT_TTL_MS = 30 * 24 * 3600 * 1000  # how long an alert can still be labelled
_alerts = msgspec.json.Decoder(Alert)


@dataclass(frozen=True)
class Disposition:
    """A valid disposition with the alert it labels."""

    feedback: Feedback
    alert: Alert


@dataclass(frozen=True)
class Applied(Disposition):
    first: bool  # False: this transaction already had this label; nothing changed


@dataclass(frozen=True)
class Rejected:
    field: str
    reason: str


class Dispositions:
    def __init__(self, client: RedisClient, blocklist_ttl_ms: int) -> None:
        self._redis = client
        self._store = OnlineFeatureStore(client)
        self._blocklist_ttl_ms = blocklist_ttl_ms

    def remember(self, raw_alert: bytes) -> bool:
        """Keep an alert (its card, device, merchant, features, score) for its feedback;
        False for a message that is not an alert (the job writes only valid ones)."""
        alert = decode_or_none(_alerts, raw_alert)
        if alert is None:
            return False
        self._redis.set(layout.alert_context(alert.transaction_id), raw_alert, px=ALERT_TTL_MS)
        return True

    def alert(self, transaction_id: str) -> Alert | None:
        raw = self._redis.get(layout.alert_context(transaction_id))
        return decode_or_none(_alerts, raw) if isinstance(raw, bytes) else None

    def context(self, raw_feedback: bytes) -> Disposition | Rejected | None:
        """The message with its alert; None while the alert is not known (yet)."""
        feedback = decode_feedback(raw_feedback)
        if isinstance(feedback, InvalidEvent):
            return Rejected(feedback.field, feedback.reason)
        alert = self.alert(feedback.transaction_id)
        return None if alert is None else Disposition(feedback, alert)

    def apply(self, raw_feedback: bytes) -> Applied | Rejected | None:
        """Apply one message; None while its alert is not known (yet)."""
        found = self.context(raw_feedback)
        if not isinstance(found, Disposition):
            return found
        feedback, alert = found.feedback, found.alert
        tx, fraud = alert.transaction, feedback.label == "fraud"
        changed = self._store.record_label(
            tx.transaction_id, tx.merchant_id, tx.event_time_ms, fraud
        )
        blocklist = [layout.blocklist_card(tx.card_id)]
        blocklist += [layout.blocklist_device(tx.device_id)] if tx.device_id else []
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(layout.card_labels(tx.card_id), tx.transaction_id, feedback.label)
        pipe.pexpire(layout.card_labels(tx.card_id), ALERT_TTL_MS)
        if fraud:
            for key in blocklist:
                pipe.set(key, tx.transaction_id, px=self._blocklist_ttl_ms, nx=True)
        pipe.execute()
        if not fraud:  # lift what this transaction's fraud label blocked, and nothing else
            self._store.delete_if((key, tx.transaction_id) for key in blocklist)
        return Applied(feedback, alert, changed)
