"""segments outcomes definitions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "definitions",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_definitions")),
    )
    with op.batch_alter_table("definitions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_definitions_version"), ["version"], unique=False)

    op.create_table(
        "outcome_achievements",
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=True),
        sa.Column("achieved_at", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "outcome", name=op.f("pk_outcome_achievements")),
    )
    with op.batch_alter_table("outcome_achievements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outcome_achievements_achieved_at"), ["achieved_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_outcome_achievements_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "segment_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_changes")),
    )
    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_segment_changes_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_segment_changes_customer_id_at"), ["customer_id", "at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_segment_changes_session_id"), ["session_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_segment_changes_visitor_id_at"), ["visitor_id", "at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segment_changes_visitor_id_at"))
        batch_op.drop_index(batch_op.f("ix_segment_changes_session_id"))
        batch_op.drop_index(batch_op.f("ix_segment_changes_customer_id_at"))
        batch_op.drop_index(batch_op.f("ix_segment_changes_at"))

    op.drop_table("segment_changes")
    with op.batch_alter_table("outcome_achievements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outcome_achievements_customer_id"))
        batch_op.drop_index(batch_op.f("ix_outcome_achievements_achieved_at"))

    op.drop_table("outcome_achievements")
    with op.batch_alter_table("definitions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_definitions_version"))

    op.drop_table("definitions")
