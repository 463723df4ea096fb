"""Alembic's environment for the case store: the models' metadata, the URL from the caller."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool, text

from services.workbench.cases import Base

MIGRATION_LOCK = 0x6672_6175_6400_0001  # any constant of this application's own

config = context.config
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # fmt: skip
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # replicas starting together: one migrates
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
