"""Alembic's environment for the case store: the models' metadata, the URL from the caller."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from services.workbench.cases import Base

config = context.config
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # fmt: skip
    with context.begin_transaction():
        context.run_migrations()
