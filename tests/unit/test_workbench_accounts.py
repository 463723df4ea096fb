"""Accounts: passwords kept only as scrypt hashes, sign-in refuses a wrong password and an
unknown name alike, bad names and short passwords are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from services.core.errors import UserError
from services.workbench import accounts
from services.workbench.cases import Role
from services.workbench.store import default_url, engine


def test_a_password_is_kept_only_as_a_salted_hash_and_signs_in(tmp_path: Path) -> None:
    store = engine(default_url(tmp_path))
    with Session(store) as session, session.begin():
        user = accounts.add(session, "ana", "correct horse battery", Role.ANALYST)
        assert "correct horse" not in user.password_hash
        assert user.password_hash.startswith("scrypt$")
        other = accounts.add(session, "bo", "correct horse battery", Role.LEAD)
        assert other.password_hash != user.password_hash  # salted
    with Session(store) as session:
        signed = accounts.sign_in(session, "ana", "correct horse battery")
        assert signed is not None
        assert signed.role is Role.ANALYST
        assert accounts.sign_in(session, "ana", "correct horse batterY") is None
        assert accounts.sign_in(session, "nobody", "correct horse battery") is None
    store.dispose()


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [("Ana", "long enough pass", "user name"), ("a", "long enough pass", "user name"),
     ("ana; drop", "long enough pass", "user name"), ("ana", "short", "at least 12"),
     ("ana", "long enough pass", "exists already")],
)  # fmt: skip
def test_bad_accounts_are_refused_in_one_line(
    tmp_path: Path, name: str, password: str, message: str
) -> None:
    store = engine(default_url(tmp_path))
    with Session(store) as session, session.begin():
        accounts.add(session, "ana", "the first one's pass", Role.ANALYST)
        with pytest.raises(UserError, match=message):
            accounts.add(session, name, password, Role.ANALYST)
    store.dispose()
