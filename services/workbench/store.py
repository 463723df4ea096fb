"""The case store's database: SQLite in the state directory by default, PostgreSQL by URL;
its schema brought to the newest Alembic revision before use."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'workbench.db'}"


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (idempotent; safe at every start)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def engine(url: str) -> Engine:
    migrate(url)
    return create_engine(url, pool_pre_ping=True)
