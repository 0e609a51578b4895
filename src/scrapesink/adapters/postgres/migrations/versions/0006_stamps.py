"""raw_event_keys.stamp: the acceptance stamp of the copy each key holds (oldest wins).

A key claimed before stamps existed keeps NULL, read as older than any stamp: what was stored
first then stays, as it did.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("raw_event_keys", sa.Column("stamp", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    op.drop_column("raw_event_keys", "stamp")
