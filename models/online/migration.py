"""Moving a store of layout v2 (ids spliced raw into key names) to v3 in place, so that an
upgrade keeps every card's history, label and blocklist entry.

Each ``fs:v2:`` key whose name parses unambiguously (exactly one hash tag, no brace after it)
gets its v3 name with its value and remaining TTL; values whose format changed are converted
(a merchant's label marker gains its time, an alert becomes its context). Where a v3 key
exists already (the v3 job or feedback app wrote it), what can be merged is: a merchant's day
counts are added, a card's counted ids and labels joined; a value that cannot (a card's folded
state, a blocklist entry, a marker) keeps its newer v3 form, and is counted. So run it before
the v3 job starts: a card the job has seen since keeps only its history since. Keys whose name
is ambiguous (only a crafted id makes one) are left to expire and counted. Safe to repeat.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import redis

from models.online import layout
from services.core.contract import Alert, decode_or_none
from services.core.settings import RedisClient

V2_PREFIX: Final = "fs:v2:"
_V2_KEY = re.compile(r"fs:v2:\{([cdmt]):([^{}]*)\}:([^{}]*)", re.DOTALL)
_alerts = msgspec.json.Decoder(Alert)
_NAMES: Final[dict[tuple[str, str], Callable[[str], str]]] = {
    ("c", "state"): layout.card_state, ("c", "seen"): layout.card_seen,
    ("c", "recent"): layout.card_recent, ("c", "labels"): layout.card_labels,
    ("c", "blocked"): layout.blocklist_card, ("d", "blocked"): layout.blocklist_device,
    ("m", "days"): layout.merchant_days, ("t", "alert"): layout.alert_context,
}  # fmt: skip


@dataclass
class Migrated:
    moved: int = 0  # renamed with their value as it was
    converted: int = 0  # renamed with their value in the v3 format
    merged: int = 0  # added into a v3 key that existed (day counts, counted ids, labels)
    kept_newer: int = 0  # a v3 key existed and cannot be merged into: the v2 one was dropped
    ambiguous: int = 0  # not parsable without doubt: left to expire
    unreadable: list[str] = field(default_factory=list)  # values that could not be converted


def v3_name(v2_key: str) -> str | None:
    """The v3 name of a v2 key, or None if its name is ambiguous or unknown."""
    match = _V2_KEY.fullmatch(v2_key)
    if match is None:
        return None
    kind, identifier, suffix = match.groups()
    if kind == "m" and suffix.startswith("label:"):
        return layout.merchant_label(identifier, suffix.removeprefix("label:"))
    name = _NAMES.get((kind, suffix))
    return None if name is None else name(identifier)


Convert = Callable[[bytes], bytes | None]  # a v2 value in the v3 format (None: unreadable)


def _converter(v2_key: str) -> Convert | None:
    """How a key's value changes format, if it does."""
    if v2_key.endswith(":alert"):
        return _alert_context
    if ":label:" in v2_key.split("}", 1)[1]:
        return lambda label: b"0:" + label  # its time unknown: any later label wins
    return None


def _alert_context(value: bytes) -> bytes | None:
    alert = decode_or_none(_alerts, value)
    return None if alert is None else layout.AlertContext.of_alert(alert).encode()


def migrate_v2(client: RedisClient, dry_run: bool = False) -> Migrated:
    """Move every v2 key to its v3 name (see the module's docstring); what was done."""
    done = Migrated()
    for raw in client.scan_iter(match=f"{V2_PREFIX}*", count=1_000):
        key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        new = v3_name(key)
        if new is None:
            done.ambiguous += 1
            continue
        convert = _converter(key)
        if client.exists(new):
            _into_existing(client, key, new, done, dry_run)
        elif convert is not None:
            done.converted += _convert(client, key, new, convert, done, dry_run)
        elif not _move(client, key, new, dry_run):  # written meanwhile (BUSYKEY)
            _into_existing(client, key, new, done, dry_run)
        else:
            done.moved += 1
        if not dry_run:
            client.delete(key)
    return done


def _into_existing(client: RedisClient, key: str, new: str, done: Migrated, dry_run: bool) -> None:
    """Merge a v2 key into its existing v3 key where the type allows; else keep the v3 one."""
    kind: Any = client.type(key)
    merge = _MERGES.get(kind.decode() if isinstance(kind, bytes) else str(kind))
    if merge is None:
        done.kept_newer += 1
        return
    if not dry_run:
        merge(client, key, new)
    done.merged += 1


def _merge_hash(client: RedisClient, key: str, new: str) -> None:
    """Day counts (``n<day>``, ``f<day>``) add up; other fields (labels, rows) keep v3's."""
    fields: Any = client.hgetall(key)
    for name, value in fields.items():
        if key.endswith(":days"):
            client.hincrby(new, name, int(value))
        else:
            client.hsetnx(new, name, value)


def _merge_zset(client: RedisClient, key: str, new: str) -> None:
    members: Any = client.zrange(key, 0, -1, withscores=True)
    if members:
        client.zadd(new, dict(members), nx=True)


_MERGES: Final[dict[str, Callable[[RedisClient, str, str], None]]] = {
    "hash": _merge_hash, "zset": _merge_zset,
}  # fmt: skip


def _ttl(client: RedisClient, key: str) -> int:
    left: Any = client.pttl(key)
    return max(int(left), 0)  # 0: no expiry (-1), or gone meanwhile (-2)


def _move(client: RedisClient, key: str, new: str, dry_run: bool) -> bool:
    """Copy a key under its new name with its TTL; False if the new name was taken meanwhile."""
    dumped: Any = client.dump(key)
    if dumped is None or dry_run:
        return True
    try:
        client.restore(new, _ttl(client, key), dumped)
    except redis.ResponseError as error:
        if "BUSYKEY" not in str(error):
            raise
        return False
    return True


def _convert(
    client: RedisClient, key: str, new: str, convert: Convert, done: Migrated, dry_run: bool
) -> int:
    value: Any = client.get(key)
    converted = convert(value) if isinstance(value, bytes) else None
    if converted is None:
        done.unreadable.append(key)
        return 0
    if not dry_run:
        ttl = _ttl(client, key)
        client.set(new, converted, px=ttl or None)
    return 1
