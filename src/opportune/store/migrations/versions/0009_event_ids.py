"""event ids: the database's exactly-once key for events

``events`` is keyed by ``(visitor_id, ts, event_id)``, and ``ts`` is the server-corrected
time, which a resend with another ``sentAt`` changes: the database never saw such a resend
as the same event. ``event_ids`` is keyed by (site, visitor, client event id); the writer
inserts there first, with ON CONFLICT DO NOTHING, in the events' transaction. Backfilled
from the stored events, one row per key (an event stored twice before this keeps both
``events`` rows; its key is taken once, at its first time).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_ids",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "visitor_id", "event_id", name=op.f("pk_event_ids")),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO event_ids (site_id, visitor_id, event_id, ts) "
        "SELECT site_id, visitor_id, event_id, MIN(ts) FROM events "
        "GROUP BY site_id, visitor_id, event_id"
    )


def downgrade() -> None:
    op.drop_table("event_ids")
