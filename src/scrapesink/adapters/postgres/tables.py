"""The system schema as SQLAlchemy Core metadata: the reference the migrations are checked against.

Hot paths do not go through these objects (they use psycopg directly); DDL and Alembic do.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

raw_events = Table(
    "raw_events",
    metadata,
    # Filled from raw_events_id_seq (see migration 0001: no identity on partitioned tables in 16).
    Column("id", BigInteger, nullable=False, server_default=text("nextval('raw_events_id_seq')")),
    Column("source", Text(collation="C"), nullable=False),
    Column("source_id", Text(collation="C"), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("processed", Boolean, nullable=False, server_default=text("false")),
    # PostgreSQL requires the partition key in every unique constraint of a partitioned table.
    PrimaryKeyConstraint("id", "occurred_at", name="raw_events_pkey"),
    Index("ix_raw_events_source_occurred_at", "source", "occurred_at"),
    # jsonb_path_ops: smaller and faster to maintain than the default opclass, and it serves the
    # containment (@>) and jsonpath (@?, @@) queries raw-event consumers run.
    Index(
        "ix_raw_events_payload",
        "payload",
        postgresql_using="gin",
        postgresql_ops={"payload": "jsonb_path_ops"},
    ),
    postgresql_partition_by="RANGE (occurred_at)",
)

# Global deduplication: PostgreSQL cannot enforce UNIQUE (source, source_id) on a table partitioned
# by occurred_at, so this unpartitioned registry holds every key once, with the day it lives in.
raw_event_keys = Table(
    "raw_event_keys",
    metadata,
    Column("source", Text(collation="C"), nullable=False),
    Column("source_id", Text(collation="C"), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    # the acceptance stamp of the copy held (ports.stamp); NULL: claimed before stamps existed
    Column("stamp", LargeBinary, nullable=True),
    PrimaryKeyConstraint("source", "source_id", name="raw_event_keys_pkey"),
)

# Which journal ranges (seq first..last of one journal file) PostgreSQL holds: written in the same
# transaction as the events, so "delivered" can never be recorded without the data or vice versa.
journal_progress = Table(
    "journal_progress",
    metadata,
    Column("journal_id", Text(collation="C"), nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("journal_id", "first_seq", name="journal_progress_pkey"),
    CheckConstraint("first_seq <= last_seq", name="journal_progress_range"),
)

# What `scrapesink models apply` changed in the tables of declared models, for `models history`.
model_history = Table(
    "model_history",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("model", Text, nullable=False),
    Column("table_name", Text, nullable=False),
    Column("change", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("destructive", Boolean, nullable=False, server_default=text("false")),
)

# Who may call the REST API: a key's secret is stored as its SHA-256 only (see api_access.py).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("revoked_at", DateTime(timezone=True)),
    UniqueConstraint("prefix", name="api_keys_prefix_key"),
    UniqueConstraint("secret_hash", name="api_keys_secret_hash_key"),
)

# Every admin action and every delete through the API: who, what, when, outcome; no secrets.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Index("ix_audit_log_at", "at"),
)

# ETL job definitions, the components they are made of, and the runs that recorded ingests.
etl_jobs = Table(
    "etl_jobs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("source", Text),
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("name", name="etl_jobs_name_key"),
)

etl_components = Table(
    "etl_components",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("job_id", BigInteger, ForeignKey("etl_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("position", Integer, nullable=False),
    UniqueConstraint("job_id", "name", name="etl_components_job_id_name_key"),
)

# Status transitions are checked by a trigger (migration 0005), not expressible here.
etl_runs = Table(
    "etl_runs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("job_id", BigInteger, ForeignKey("etl_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("status", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("finished_at", DateTime(timezone=True)),
    Column("records_read", BigInteger, nullable=False, server_default="0"),
    Column("records_stored", BigInteger, nullable=False, server_default="0"),
    Column("records_duplicate", BigInteger, nullable=False, server_default="0"),
    Column("records_unchanged", BigInteger, nullable=False, server_default="0"),
    Column("records_rejected", BigInteger, nullable=False, server_default="0"),
    Column("records_pending", BigInteger, nullable=False, server_default="0"),
    Column("error_summary", Text),
    CheckConstraint(
        "status IN ('pending', 'running', 'succeeded', 'failed', 'partial')",
        name="etl_runs_status",
    ),
    Index("ix_etl_runs_job_id_started_at", "job_id", "started_at"),
)
