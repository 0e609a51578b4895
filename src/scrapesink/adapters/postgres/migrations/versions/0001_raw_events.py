"""raw_events: the day-partitioned raw-event log and its global key registry.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Keys are identifiers, not prose: COLLATE "C" orders them by bytes, the same on every
    # server whatever its locale, and makes every key comparison a memcmp instead of strcoll.
    op.create_table(
        "raw_events",
        sa.Column("id", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text(collation="C"), nullable=False),
        sa.Column("source_id", sa.Text(collation="C"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("processed", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.PrimaryKeyConstraint("id", "occurred_at", name="raw_events_pkey"),
        postgresql_partition_by="RANGE (occurred_at)",
    )
    # A sequence rather than an identity column: PostgreSQL 16 (the embedded server) does not
    # support identity columns on partitioned tables.
    op.execute("CREATE SEQUENCE raw_events_id_seq OWNED BY raw_events.id")
    op.execute("ALTER TABLE raw_events ALTER COLUMN id SET DEFAULT nextval('raw_events_id_seq')")
    op.create_index("ix_raw_events_source_occurred_at", "raw_events", ["source", "occurred_at"])
    op.create_index(
        "ix_raw_events_payload",
        "raw_events",
        ["payload"],
        postgresql_using="gin",
        postgresql_ops={"payload": "jsonb_path_ops"},
    )
    op.create_table(
        "raw_event_keys",
        sa.Column("source", sa.Text(collation="C"), nullable=False),
        sa.Column("source_id", sa.Text(collation="C"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "source_id", name="raw_event_keys_pkey"),
    )
    # No index on occurred_at: retention finds a day's keys by joining the partition it drops
    # with the primary key, and one index fewer makes every claim cheaper.


def downgrade() -> None:
    op.drop_table("raw_event_keys")
    op.drop_table("raw_events")  # drops every partition with it
