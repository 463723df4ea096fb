"""backtests run from the strategy page; cases closed by labels from elsewhere

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as cases:  # batch: SQLite rebuilds the table
        cases.add_column(sa.Column("closed_by", sa.String(length=128), nullable=True))
        cases.create_index("ix_cases_merchant_id", ["merchant_id"])  # a case's merchant
    op.create_table(
        "early_labels",
        sa.Column("transaction_id", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("analyst", sa.String(length=128), nullable=False),
        sa.Column("labelled_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id"),
    )
    op.create_table(
        "backtests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_day", sa.String(length=10), nullable=False),
        sa.Column("end_day", sa.String(length=10), nullable=False),
        sa.Column("candidate", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("backtests")
    op.drop_table("early_labels")
    with op.batch_alter_table("cases") as cases:
        cases.drop_index("ix_cases_merchant_id")
        cases.drop_column("closed_by")
