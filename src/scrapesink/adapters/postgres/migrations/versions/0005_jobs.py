"""etl_jobs, etl_components, etl_runs: ETL job definitions and their run metadata.

A trigger keeps run status transitions valid for every client (psql too): a finished run
(succeeded, failed, partial) never changes status again, and nothing goes back to pending.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")

TRANSITIONS = """
CREATE FUNCTION etl_runs_transition() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'pending' AND NEW.status IN ('running', 'failed'))
        OR (OLD.status = 'running' AND NEW.status IN ('succeeded', 'failed', 'partial'))
    ) THEN
        RAISE EXCEPTION 'run %: status % cannot become %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER etl_runs_transition BEFORE UPDATE OF status ON etl_runs
    FOR EACH ROW EXECUTE FUNCTION etl_runs_transition();
"""


def upgrade() -> None:
    op.create_table(
        "etl_jobs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("config", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.UniqueConstraint("name", name="etl_jobs_name_key"),
    )
    op.create_table(
        "etl_components",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "job_id",
            sa.BigInteger,
            sa.ForeignKey("etl_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("config", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("position", sa.Integer, nullable=False),
        sa.UniqueConstraint("job_id", "name", name="etl_components_job_id_name_key"),
    )
    op.create_table(
        "etl_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "job_id",
            sa.BigInteger,
            sa.ForeignKey("etl_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("records_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_stored", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_duplicate", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_unchanged", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_rejected", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("records_pending", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error_summary", sa.Text),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'partial')",
            name="etl_runs_status",
        ),
    )
    op.create_index("ix_etl_runs_job_id_started_at", "etl_runs", ["job_id", "started_at"])
    op.execute(TRANSITIONS)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS etl_runs_transition ON etl_runs")
    op.execute("DROP FUNCTION IF EXISTS etl_runs_transition()")
    op.drop_index("ix_etl_runs_job_id_started_at", table_name="etl_runs")
    op.drop_table("etl_runs")
    op.drop_table("etl_components")
    op.drop_table("etl_jobs")
