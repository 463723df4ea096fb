"""The event contract: Transaction, Decision, Alert, Feedback and DeadLetter, defined once.

Producers, the stream job, the feedback app and the tests all import these. Validation lives
in the types: msgspec checks types while decoding, and each ``__post_init__`` checks values,
which runs both on decode and on construction, so a generator cannot build an event that a
consumer would reject. Bad input is data: :func:`decode_transaction` returns an
:class:`InvalidEvent` naming the failing field instead of raising.
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import datetime
from typing import Annotated, Final, Literal, TypeVar

import msgspec

from services.core.iso_codes import COUNTRIES, CURRENCIES

MAX_MESSAGE_BYTES: Final = 16 * 1024
"""A transaction is a few hundred bytes; anything this large is garbage or an attack."""

# Event times outside this range are typos (seconds for milliseconds, or a year 0).
_MIN_EVENT_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
_MAX_EVENT_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z
_MCC = re.compile(r"^\d{4}$")
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}$")
_FIELD_IN_MESSAGE = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_MISSING_FIELD = re.compile(r"missing required field `([A-Za-z_][A-Za-z0-9_]*)`")

Channel = Literal["card_present", "ecommerce", "atm"]
DecisionOutcome = Literal["approve", "review", "decline"]
Label = Literal["fraud", "legit"]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_T = TypeVar("_T")


def _invalid(field: str, reason: str) -> ValueError:
    # msgspec adds no path to errors raised in __post_init__; add it in its own format.
    return ValueError(f"{reason} - at `$.{field}`")


def parse_event_time(value: int | str, field: str = "event_time") -> int:
    """Epoch milliseconds from epoch milliseconds or an RFC 3339 string with a UTC offset."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _invalid(field, f"not an RFC 3339 timestamp: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            raise _invalid(field, "RFC 3339 timestamp needs a UTC offset or Z")
        millis = int(parsed.timestamp() * 1000)
    else:
        millis = value
    if not _MIN_EVENT_MS <= millis < _MAX_EVENT_MS:
        raise _invalid(field, f"epoch milliseconds out of range 2000..2100: {millis}")
    return millis


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """One card or payment transaction; Kafka key = card_id. ``event_time`` is epoch ms."""

    transaction_id: Id
    event_time: int | str
    card_id: Id
    customer_id: Id
    merchant_id: Id
    merchant_category: str
    amount: float
    currency: str
    country: str
    channel: Channel
    device_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    ip: str | None = None
    lat: float | None = None
    lon: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event_time, int):
            msgspec.structs.force_setattr(self, "event_time", parse_event_time(self.event_time))
        else:
            parse_event_time(self.event_time)
        if not _MCC.match(self.merchant_category):
            raise _invalid("merchant_category", "MCC must be 4 digits")
        if not (math.isfinite(self.amount) and 0 < self.amount < 1e9):
            raise _invalid("amount", f"must be a finite number > 0 and < 1e9, got {self.amount}")
        if self.currency not in CURRENCIES:
            raise _invalid("currency", f"unknown ISO 4217 currency {self.currency[:8]!r}")
        if self.country not in COUNTRIES:
            raise _invalid("country", f"unknown ISO 3166-1 alpha-2 country {self.country[:8]!r}")
        if self.ip is not None and not _IPV4.match(self.ip):
            try:  # the slower, complete check only for what is not a plain IPv4 address
                ipaddress.ip_address(self.ip)
            except ValueError:
                raise _invalid("ip", f"not an IP address: {self.ip[:64]!r}") from None
        if self.lat is not None and not -90.0 <= self.lat <= 90.0:
            raise _invalid("lat", f"latitude must be within -90..90, got {self.lat}")
        if self.lon is not None and not -180.0 <= self.lon <= 180.0:
            raise _invalid("lon", f"longitude must be within -180..180, got {self.lon}")
        if (self.lat is None) != (self.lon is None):
            raise _invalid("lat" if self.lat is None else "lon", "lat and lon come together")

    @property
    def event_time_ms(self) -> int:
        """``event_time`` as epoch ms (always an int after construction; typed for mypy)."""
        assert isinstance(self.event_time, int)
        return self.event_time


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome for one transaction; exactly one per transaction on ``decisions``."""

    transaction_id: Id
    card_id: Id
    event_time: int
    decided_at: int
    score: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    decision: DecisionOutcome
    reasons: list[str]
    model_version: str
    degraded: list[str] = []
    latency_ms: float = 0.0


class Alert(Decision, frozen=True, kw_only=True):
    """A review or decline decision with what drove it, for analysts."""

    transaction: Transaction
    features: dict[str, float] = {}


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    """An analyst's disposition of one alerted transaction."""

    transaction_id: Id
    label: Label
    analyst: Id
    time: int | str
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""

    def __post_init__(self) -> None:
        if not isinstance(self.time, int):
            msgspec.structs.force_setattr(self, "time", parse_event_time(self.time, "time"))
        else:
            parse_event_time(self.time, "time")


class InvalidEvent(msgspec.Struct, frozen=True):
    """Why a message was rejected: the failing field (``$`` for the whole payload) and reason."""

    field: str
    reason: str


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """What goes to ``transactions.dlq``: the raw bytes, why, and where they came from."""

    field: str
    reason: str
    raw: bytes
    source_topic: str
    partition: int
    offset: int
    failed_at: int


_transaction_decoder = msgspec.json.Decoder(Transaction)
_feedback_decoder = msgspec.json.Decoder(Feedback)
_encoder = msgspec.json.Encoder()


def _to_invalid(error: msgspec.DecodeError) -> InvalidEvent:
    message = str(error)
    match = _FIELD_IN_MESSAGE.search(message) or _MISSING_FIELD.search(message)
    reason = message.split(" - at `")[0]
    return InvalidEvent(field=match.group(1) if match else "$", reason=reason)


def _decode(decoder: msgspec.json.Decoder[_T], raw: bytes) -> _T | InvalidEvent:
    if len(raw) > MAX_MESSAGE_BYTES:
        return InvalidEvent("$", f"payload of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as error:
        return _to_invalid(error)


def decode_transaction(raw: bytes) -> Transaction | InvalidEvent:
    """A valid Transaction, or the reason this message is not one."""
    return _decode(_transaction_decoder, raw)


def decode_feedback(raw: bytes) -> Feedback | InvalidEvent:
    """A valid Feedback, or the reason this message is not one."""
    return _decode(_feedback_decoder, raw)


def encode(event: msgspec.Struct) -> bytes:
    """Compact JSON for any contract type; None fields are written as null."""
    return _encoder.encode(event)
