"""Analysts' accounts: names, roles and scrypt password hashes (Python's own hashlib, no
extra dependency); a sign-in costs the same whether or not the name exists."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import defaultdict, deque

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.errors import UserError
from services.workbench.cases import Role, User, now

NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
MIN_PASSWORD = 12
_N, _R, _P = 2**14, 8, 1  # scrypt's cost: about 50 ms and 16 MiB a sign-in


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def _matches(password: str, stored: str) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    tried = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                           p=int(p), dklen=len(digest) // 2)  # fmt: skip
    return hmac.compare_digest(tried.hex(), digest)


_DUMMY = hash_password("no such user, but the same work")


def add(session: Session, name: str, password: str, role: Role) -> User:
    """A new account; a bad name, a short password or a taken name is one clear error."""
    if not NAME.match(name):
        raise UserError(f"user name {name!r}: 2-64 of a-z, 0-9, '.', '_', '-', starting a-z")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    if session.scalars(select(User).where(User.name == name)).one_or_none() is not None:
        raise UserError(f"user {name!r} exists already")
    user = User(name=name, password_hash=hash_password(password), role=role, created_at=now())
    session.add(user)
    return user


def sign_in(session: Session, name: str, password: str) -> User | None:
    """The account if the password is its own; None otherwise, after the same work."""
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    matched = _matches(password, user.password_hash if user else _DUMMY)
    return user if user is not None and matched else None


class Failures:
    """Wrong passwords per name in this process: after ``LIMIT`` within ``WINDOW_S``, the name
    is refused until the oldest ages out (guessing slowed; scrypt's cost not multiplied)."""

    LIMIT, WINDOW_S = 5, 300.0

    def __init__(self) -> None:
        self._at: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._at[name].append(time.monotonic())

    def refused(self, name: str) -> bool:
        with self._lock:
            recent = self._at.get(name)
            while recent and recent[0] < time.monotonic() - self.WINDOW_S:
                recent.popleft()
            if recent is not None and not recent:
                del self._at[name]
            return recent is not None and len(recent) >= self.LIMIT
