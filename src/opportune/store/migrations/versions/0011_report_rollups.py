"""report rollups: the reports' counts per site, UTC quarter hour (and day), metric and keys

Also ``agent_presence_log``: every presence an agent was put in, for the occupancy report.

The rollups are filled by the server's rollup pass (whose first pass on a database with
history rebuilds them) and by ``opportune reports rebuild`` (store/rollups.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_rollups",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("quarter", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(length=24), nullable=False),
        sa.Column("k1", sa.Text(), nullable=True),
        sa.Column("k2", sa.String(length=255), nullable=True),
        sa.Column("k3", sa.String(length=255), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("x", sa.Float(), nullable=True),
    )
    with op.batch_alter_table("report_rollups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_report_rollups_metric_quarter_site_id"),
            ["metric", "quarter", "site_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_report_rollups_site_id_quarter"), ["site_id", "quarter"], unique=False
        )
    op.create_table(
        "report_rollups_daily",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(length=24), nullable=False),
        sa.Column("k1", sa.Text(), nullable=True),
        sa.Column("k2", sa.String(length=255), nullable=True),
        sa.Column("k3", sa.String(length=255), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("x", sa.Float(), nullable=True),
    )
    with op.batch_alter_table("report_rollups_daily", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_report_rollups_daily_metric_day_site_id"),
            ["metric", "day", "site_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_report_rollups_daily_site_id_day"), ["site_id", "day"], unique=False
        )
    op.create_table(
        "report_rollup_marks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_report_rollup_marks")),
    )

    op.create_table(
        "agent_presence_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("presence", sa.String(length=12), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_presence_log")),
    )
    with op.batch_alter_table("agent_presence_log", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_presence_log_agent_id_at"), ["agent_id", "at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_agent_presence_log_at"), ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agent_presence_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_presence_log_at"))
        batch_op.drop_index(batch_op.f("ix_agent_presence_log_agent_id_at"))
    op.drop_table("agent_presence_log")
    op.drop_table("report_rollup_marks")
    with op.batch_alter_table("report_rollups_daily", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_rollups_daily_site_id_day"))
        batch_op.drop_index(batch_op.f("ix_report_rollups_daily_metric_day_site_id"))
    op.drop_table("report_rollups_daily")
    with op.batch_alter_table("report_rollups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_rollups_site_id_quarter"))
        batch_op.drop_index(batch_op.f("ix_report_rollups_metric_quarter_site_id"))
    op.drop_table("report_rollups")
