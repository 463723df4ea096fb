"""Analysts' allow- and block-lists: cards, devices, merchants, BINs and countries, each entry
with a reason, who added it and an expiry.

The lists live in one Redis hash (``fs:v3:{lists}:entries``, field ``ACTION:KIND:VALUE``, value
the JSON entry) with a change counter beside it (``fs:v3:{lists}:version``). They are small (an
analyst adds them one at a time; at most ``MAX_ENTRIES``), so every job worker holds a copy and
looks the counter up every ``REFRESH_S``: a change is in force within a second, at one Redis
round trip a second. A card or device that a fraud disposition blocked stays in its own
``blocked`` key (``layout.blocklist_card``), as before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from models.online import layout
from services.core.settings import RedisClient
from services.core.tokens import Tokenizer

Action = Literal["block", "allow"]
Kind = Literal["card", "device", "merchant", "bin", "country"]
KINDS: Final[tuple[Kind, ...]] = ("card", "device", "merchant", "bin", "country")
ENTRIES: Final = f"{layout.PREFIX}:{{lists}}:entries"
VERSION_KEY: Final = f"{layout.PREFIX}:{{lists}}:version"
MAX_ENTRIES: Final = 100_000
MAX_TEXT: Final = 256  # characters of a value, a reason or a name
REFRESH_S: Final = 0.5
BIN_ATTRIBUTE: Final = "card_bin"  # the declared attribute a BIN list matches


class ListError(ValueError):
    """An entry that cannot be added: the message says why."""


class Entry(msgspec.Struct, frozen=True):
    action: Action
    kind: Kind
    value: str
    reason: str
    added_by: str
    added_at_ms: int
    expires_at_ms: int | None = None  # None: until removed

    def live(self, now_ms: int) -> bool:
        return self.expires_at_ms is None or now_ms < self.expires_at_ms


def field_name(action: Action, kind: Kind, value: str) -> str:
    return f"{action}:{kind}:{value}"


FORMATS: Final[dict[Kind, re.Pattern[str]]] = {
    "country": re.compile(r"^[A-Z]{2}$"),
    "bin": re.compile(r"^[0-9]{6,8}$"),
}


def normal(kind: Kind, value: str) -> str:
    """A list value as the job sees it in transactions (a country in upper case)."""
    value = value.strip()
    return value.upper() if kind == "country" else value


def checked(kind: Kind, value: str) -> str:
    """``value`` in its normal form, or ListError if it could never match a transaction (a
    country is ISO 3166 alpha-2, a BIN 6 to 8 digits)."""
    value = normal(kind, value)
    form = FORMATS.get(kind)
    if form is not None and not form.match(value):
        raise ListError(
            f"a {kind} is {'two letters' if kind == 'country' else '6 to 8 digits'}"
            f", not {value[:20]!r}"
        )
    return value


def add(client: RedisClient, entry: Entry, names: Sequence[str]) -> None:
    """Add ``entry`` under every name its value is known by (a card's token and raw id)."""
    for text in (entry.value, entry.reason, entry.added_by):
        if not text or len(text) > MAX_TEXT or not text.isprintable():
            raise ListError(f"values, reasons and names are 1 to {MAX_TEXT} printable characters")
    lapsed = [f for f, e in entries(client).items() if not e.live(entry.added_at_ms)]
    if lapsed:
        client.hdel(ENTRIES, *lapsed)  # lapsed entries make room
    if client.hlen(ENTRIES) + len(names) > MAX_ENTRIES:
        raise ListError(f"the lists hold {MAX_ENTRIES} entries at most: remove some first")
    encoded = msgspec.json.encode(entry)
    client.hset(ENTRIES, mapping={field_name(entry.action, entry.kind, n): encoded for n in names})
    client.incr(VERSION_KEY)


def names_of(kind: Kind, value: str, tokenizer: Tokenizer) -> list[str]:
    """Every name the job may see ``value`` by (cards and devices are tokenized), after
    :func:`checked`."""
    value = checked(kind, value)
    return tokenizer.names(kind, value) if kind in ("card", "device") else [value]


def withdraw(client: RedisClient, action: Action, kind: Kind, names: Sequence[str]) -> int:
    """Remove an entry, and for a blocked card or device the block a fraud disposition put
    on it too; how many were removed."""
    removed = remove(client, action, kind, names)
    if action == "block" and kind in ("card", "device"):
        blocked = layout.blocklist_card if kind == "card" else layout.blocklist_device
        removed += int(client.delete(*(blocked(n) for n in names)))
    return removed


def remove(client: RedisClient, action: Action, kind: Kind, names: Sequence[str]) -> int:
    """Remove the entry under every name; how many fields were removed."""
    removed = int(client.hdel(ENTRIES, *(field_name(action, kind, n) for n in names)))
    client.incr(VERSION_KEY)
    return removed


def entries(client: RedisClient) -> dict[str, Entry]:
    """Every entry by field, expired ones included (``show`` marks them)."""
    raw: dict[bytes, bytes] = client.hgetall(ENTRIES)  # type: ignore[assignment]
    found = {}
    for name, value in raw.items():
        try:
            found[name.decode()] = msgspec.json.decode(value, type=Entry)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue  # not ours: never fails a decision
    return found


@dataclass
class Hits:
    """The list entries one transaction meets, as reason codes."""

    block: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)


class ListCache:
    """A worker's copy of the lists, refreshed when their counter moves."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._version: bytes | None = None
        self._entries: dict[str, Entry] = {}
        self._checked = 0.0

    def refresh(self) -> None:
        """Look the counter up (at most every ``REFRESH_S``); reload on a change. A Redis
        failure keeps the copy and raises: the caller treats it as any Redis outage."""
        now = time.monotonic()
        if now - self._checked < REFRESH_S:
            return
        version: bytes | None = self._client.get(VERSION_KEY)  # type: ignore[assignment]
        if version != self._version:
            self._entries = entries(self._client)
            self._version = version
        self._checked = now

    def hits(self, values: dict[Kind, Any], now_ms: int) -> Hits:
        """The block and allow entries that ``values`` (kind -> the transaction's value) meet."""
        found = Hits()
        if not self._entries:
            return found
        for kind, value in values.items():
            if value is None or value == "":
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # a code read as a number: 411111.0 is BIN 411111
            value = normal(kind, str(value))
            for action, codes in (("block", found.block), ("allow", found.allow)):
                entry = self._entries.get(f"{action}:{kind}:{value}")
                if entry is not None and entry.live(now_ms):
                    codes.append(f"list:{action}_{kind}")
        return found
