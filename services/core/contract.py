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
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, TypeVar

import msgspec

from services.core.iso_codes import COUNTRIES, CURRENCIES

MAX_MESSAGE_BYTES: Final = 16 * 1024
"""A transaction is a few hundred bytes; anything this large is garbage or an attack."""

# Event times outside this range are typos (seconds for milliseconds, or a year 0).
_MIN_EVENT_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
_MAX_EVENT_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z
# Every pattern is used with fullmatch and spelled with [0-9]: ``$`` would accept a trailing
# newline and ``\d`` any Unicode digit.
_MCC = re.compile(r"[0-9]{4}")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line separators
_FIELD_IN_MESSAGE = re.compile(r"`\$\.([A-Za-z_][A-Za-z0-9_]*)")  # "at `$.x`", "in `$.x`"
_MISSING_FIELD = re.compile(r"missing required field `([A-Za-z_][A-Za-z0-9_]*)`")

Channel = Literal["card_present", "ecommerce", "atm"]
DeadLetterKind = Literal[
    "malformed", "invalid", "oversize", "key_mismatch", "event_time_future", "internal"
]
"""Why a record is a dead letter: not UTF-8 JSON of bounded depth; against the contract; larger
than MAX_MESSAGE_BYTES; a Kafka key that is not its card_id; a failure of the job itself."""
DecisionOutcome = Literal["approve", "review", "decline"]
Label = Literal["fraud", "legit"]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MAX_ATTRIBUTES: Final = 256
AttributeValue = Annotated[str, msgspec.Meta(max_length=256)] | int | float | bool | None
"""A declared attribute's value (``services.core.signals`` says which type each name has)."""
ATTRIBUTE_NAME: Final = "^[a-z][a-z0-9_]{0,47}$"  # what a signals file may declare
Attributes = Annotated[
    dict[Annotated[str, msgspec.Meta(pattern=ATTRIBUTE_NAME)], AttributeValue],
    msgspec.Meta(max_length=MAX_ATTRIBUTES),
]
_T = TypeVar("_T")


def control_problem(value: str) -> str | None:
    """Ids and categories end up in Kafka keys, Redis key names and logs: no control
    characters there."""
    found = _CONTROL.search(value)
    return None if found is None else f"control character U+{ord(found.group()):04X}"


def _check_printable(field: str, value: str | None) -> None:
    if value is not None and (problem := control_problem(value)):
        raise _invalid(field, f"{problem} in an id")


def _invalid(field: str, reason: str) -> ValueError:
    # msgspec adds no path to errors raised in __post_init__; add it in its own format.
    return ValueError(f"{reason} - at `$.{field}`")


def parse_event_time(
    value: int | str, field: str = "event_time", earliest_ms: int = _MIN_EVENT_MS
) -> int:
    """Epoch milliseconds from epoch milliseconds or an RFC 3339 string with a UTC offset,
    from ``earliest_ms`` (2000 for event times) to 2100."""
    if isinstance(value, str):
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise _invalid(field, f"not an RFC 3339 timestamp with a UTC offset: {value[:40]!r}")
        fraction = (match["fraction"] or "0")[:6]  # datetime keeps microseconds
        offset = "+00:00" if match["offset"] in "Zz" else match["offset"]
        try:
            parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}{offset}")
        except ValueError:
            raise _invalid(field, f"not a valid date or time: {value[:40]!r}") from None
        millis = int(parsed.timestamp() * 1000)
    else:
        millis = value
    if not earliest_ms <= millis < _MAX_EVENT_MS:
        year = datetime.fromtimestamp(earliest_ms / 1000, UTC).year
        raise _invalid(field, f"epoch milliseconds out of range {year}..2100: {millis}")
    return millis


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """One card or payment transaction; Kafka key = card_id. ``event_time`` is epoch ms.
    ``attributes``: the producer's own declared signals (``services.core.signals``)."""

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
    attributes: Attributes | msgspec.UnsetType | None = msgspec.UNSET  # unset: not encoded

    def __post_init__(self) -> None:
        if not isinstance(self.event_time, int):
            msgspec.structs.force_setattr(self, "event_time", parse_event_time(self.event_time))
        else:
            parse_event_time(self.event_time)
        for name in ("transaction_id", "card_id", "customer_id", "merchant_id", "device_id"):
            _check_printable(name, getattr(self, name))
        if not _MCC.fullmatch(self.merchant_category):
            raise _invalid("merchant_category", "MCC must be 4 digits")
        if not (math.isfinite(self.amount) and 0 < self.amount < 1e9):
            raise _invalid("amount", f"must be a finite number > 0 and < 1e9, got {self.amount}")
        if self.currency not in CURRENCIES:
            raise _invalid("currency", f"unknown ISO 4217 currency {self.currency[:8]!r}")
        if self.country not in COUNTRIES:
            raise _invalid("country", f"unknown ISO 3166-1 alpha-2 country {self.country[:8]!r}")
        if self.ip is not None and not _IPV4.fullmatch(self.ip):
            try:  # the slower, complete check only for what is not a plain IPv4 address
                if _CONTROL.search(self.ip):
                    raise ValueError
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
    """The outcome for one transaction; exactly one per transaction on ``decisions``. It is
    also the decision ledger's row (the lake keeps it): with the shadow model's score and the
    feature row it was decided with, a later label judges both models on the same events."""

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
    strategy_version: int = 0  # the strategy document that decided it
    shadow: list[str] = []  # shadow rules that fired: recorded, not acted on
    shadow_model_version: str = ""  # the challenger scored beside the model, not acted on
    shadow_score: float | None = None
    features: dict[str, float | None] = {}  # None: a declared signal the event lacked
    review_probability: float | None = None  # of being sent to review: 1 if flagged, else the
    # review sample's rate (None: decided before the job logged it)


class Alert(Decision, frozen=True, kw_only=True):
    """A review or decline decision with the transaction it is about, for analysts."""

    transaction: Transaction


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    """An analyst's disposition of one transaction: alerted, or not (a chargeback on an
    approved payment). ``event_time``, if known (a chargeback file carries it), is when the
    transaction happened: it narrows the search for a transaction that was never alerted."""

    transaction_id: Id
    label: Label
    analyst: Id
    time: int | str
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    event_time: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("time", "event_time"):
            value = getattr(self, name)
            if isinstance(value, str):
                msgspec.structs.force_setattr(self, name, parse_event_time(value, name))
            elif value is not None:
                parse_event_time(value, name)
        _check_printable("transaction_id", self.transaction_id)
        _check_printable("analyst", self.analyst)

    @property
    def time_ms(self) -> int:
        assert isinstance(self.time, int)
        return self.time


REASON_CODE: Final = "^[A-Za-z0-9._-]{1,16}$"  # 10.4, 4837, fraud-cnp: the networks' codes
CHARGEBACK_ANALYST: Final = "chargebacks"  # the analyst a chargeback's label is recorded under


class Chargeback(msgspec.Struct, frozen=True, kw_only=True):
    """A chargeback as an issuer's system publishes it on ``chargebacks`` (and as a row of a
    chargeback file reads): a fraud label for any transaction, approved ones included, with
    when the transaction happened and when the chargeback arrived (the label's time)."""

    transaction_id: Id
    event_time: int | str
    reason_code: Annotated[str, msgspec.Meta(pattern=REASON_CODE)]
    received_at: int | str

    def __post_init__(self) -> None:
        for name in ("event_time", "received_at"):
            msgspec.structs.force_setattr(self, name, parse_event_time(getattr(self, name), name))
        _check_printable("transaction_id", self.transaction_id)
        if self.received_ms < self.event_time_ms - 86_400_000:  # a day's slack: dates, zones
            raise _invalid("received_at", "before the transaction")

    @property
    def event_time_ms(self) -> int:
        assert isinstance(self.event_time, int)
        return self.event_time

    @property
    def received_ms(self) -> int:
        assert isinstance(self.received_at, int)
        return self.received_at

    def feedback(self, analyst: str = CHARGEBACK_ANALYST) -> Feedback:
        return Feedback(transaction_id=self.transaction_id, label="fraud", analyst=analyst,
                        time=self.received_ms, event_time=self.event_time_ms,
                        note=f"chargeback {self.reason_code}")  # fmt: skip


class LabelRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A disposition as the feedback app applied it, with the transaction it labels: published
    to ``labels`` and kept in the lake's ``labels`` table. ``alerted``: the transaction's alert
    was known; ``decision``, ``score`` and ``model_version`` are what was decided (None when
    the decision is not known either)."""

    transaction_id: Id
    label: Label
    analyst: Id
    note: str = ""
    labelled_at: int
    event_time: int
    card_id: Id
    customer_id: Id
    merchant_id: Id
    device_id: str | None = None
    alerted: bool = False
    decision: DecisionOutcome | None = None
    score: float | None = None
    model_version: str | None = None


class InvalidEvent(msgspec.Struct, frozen=True):
    """Why a message was rejected: the failing field (``$`` for the whole payload), the reason
    and its kind."""

    field: str
    reason: str
    kind: DeadLetterKind = "invalid"


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """What goes to a dead-letter topic: why, the raw bytes (the first ``raw_limit`` of them:
    ``raw_size`` and ``raw_sha256`` describe the whole value), and where they came from."""

    kind: DeadLetterKind = "invalid"
    field: str
    reason: str
    raw: bytes
    raw_size: int = 0
    raw_sha256: str = ""
    key: bytes | None = None
    source_topic: str
    partition: int
    offset: int
    failed_at: int


_transaction_decoder = msgspec.json.Decoder(Transaction)
_feedback_decoder = msgspec.json.Decoder(Feedback)
_chargeback_decoder = msgspec.json.Decoder(Chargeback)
_encoder = msgspec.json.Encoder()


def _to_invalid(error: msgspec.DecodeError, kind: DeadLetterKind = "invalid") -> InvalidEvent:
    message = str(error)
    match = _FIELD_IN_MESSAGE.search(message) or _MISSING_FIELD.search(message)
    reason = message.split(" - at `")[0]
    return InvalidEvent(field=match.group(1) if match else "$", reason=reason, kind=kind)


def _decode(
    decoder: msgspec.json.Decoder[_T], raw: bytes, max_bytes: int | None = MAX_MESSAGE_BYTES
) -> _T | InvalidEvent:
    """The decoded event or why not; never raises, whatever the bytes (size, depth, encoding)."""
    if max_bytes is not None and len(raw) > max_bytes:
        reason = f"payload of {len(raw)} bytes exceeds {max_bytes}"
        return InvalidEvent("$", reason, "oversize")
    try:
        raw.decode("utf-8")  # msgspec does not check the bytes of fields it skips
    except UnicodeDecodeError as error:
        return InvalidEvent("$", f"not UTF-8: byte {error.start}", "malformed")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as error:
        return _to_invalid(error)
    except msgspec.DecodeError as error:
        return _to_invalid(error, "malformed")
    except RecursionError:
        return InvalidEvent("$", "JSON nested too deeply", "malformed")
    except Exception as error:  # bad input is data: nothing may escape
        return InvalidEvent("$", f"undecodable ({type(error).__name__})", "malformed")


def decode_or_none(decoder: msgspec.json.Decoder[_T], raw: bytes) -> _T | None:
    """``raw`` decoded, or None for any bytes at all that are not a valid T (never raises):
    for the project's own topics, where a reader skips what it cannot use."""
    decoded = _decode(decoder, raw, max_bytes=None)  # alerts are larger than transactions
    return None if isinstance(decoded, InvalidEvent) else decoded


def decode_transaction(raw: bytes) -> Transaction | InvalidEvent:
    """A valid Transaction, or the reason this message is not one."""
    return _decode(_transaction_decoder, raw)


def decode_record(key: bytes | None, value: bytes) -> Transaction | InvalidEvent:
    """A Kafka record of ``transactions``: a valid Transaction whose key is its card_id (which
    keeps a card's events in one partition, in order), or why not."""
    parsed = decode_transaction(value)
    if isinstance(parsed, InvalidEvent) or key == parsed.card_id.encode():
        return parsed
    why = "no Kafka key" if key is None else "the Kafka key is not the card_id"
    return InvalidEvent("key", f"{why}: key each transaction by its card_id", "key_mismatch")


def decode_feedback(raw: bytes) -> Feedback | InvalidEvent:
    """A valid Feedback, or the reason this message is not one."""
    return _decode(_feedback_decoder, raw)


def decode_chargeback(raw: bytes) -> Chargeback | InvalidEvent:
    """A valid Chargeback, or the reason this message is not one."""
    return _decode(_chargeback_decoder, raw)


def encode(event: msgspec.Struct) -> bytes:
    """Compact JSON for any contract type; None fields are written as null (a transaction
    without attributes has no such field: its bytes are those of the contract before them)."""
    return _encoder.encode(event)
