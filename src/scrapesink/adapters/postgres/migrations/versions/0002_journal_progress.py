"""journal_progress: which journal ranges PostgreSQL holds, committed with the data itself.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journal_progress",
        sa.Column("journal_id", sa.Text(collation="C"), nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column(
            "delivered_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("journal_id", "first_seq", name="journal_progress_pkey"),
        sa.CheckConstraint("first_seq <= last_seq", name="journal_progress_range"),
    )


def downgrade() -> None:
    op.drop_table("journal_progress")
