"""routing

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agent_state",
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("presence", sa.String(length=12), nullable=False),
        sa.Column("idle_since", sa.BigInteger(), nullable=False),
        sa.Column("last_assigned", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent_state")),
    )
    op.create_table(
        "attribution_touchpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("attribution_id", sa.String(length=128), nullable=False),
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("medium", sa.String(length=8), nullable=False),
        sa.Column("value_share", sa.Float(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribution_touchpoints")),
    )
    with op.batch_alter_table("attribution_touchpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attribution_touchpoints_attribution_id"),
            ["attribution_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_attribution_touchpoints_conversation_id"),
            ["conversation_id"],
            unique=False,
        )

    op.create_table(
        "interactions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("medium", sa.String(length=8), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("visitor_id", sa.String(length=64), nullable=True),
        sa.Column("features", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("arrived_at", sa.BigInteger(), nullable=False),
        sa.Column("assigned_at", sa.BigInteger(), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("wrap_up_code", sa.String(length=64), nullable=True),
        sa.Column("arm", sa.String(length=12), nullable=True),
        sa.Column("method", sa.String(length=12), nullable=True),
        sa.Column("propensity", sa.Float(), nullable=True),
        sa.Column("scores", sa.Text(), nullable=True),
        sa.Column("why", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interactions")),
    )
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_interactions_agent_id_ended_at"), ["agent_id", "ended_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_interactions_arrived_at"), ["arrived_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_interactions_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_interactions_status_queue"), ["status", "queue"], unique=False
        )

    op.create_table(
        "outcome_attributions",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("external_contact_id", sa.String(length=128), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcome_attributions")),
    )


def downgrade() -> None:

    op.drop_table("outcome_attributions")
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interactions_status_queue"))
        batch_op.drop_index(batch_op.f("ix_interactions_customer_id"))
        batch_op.drop_index(batch_op.f("ix_interactions_arrived_at"))
        batch_op.drop_index(batch_op.f("ix_interactions_agent_id_ended_at"))

    op.drop_table("interactions")
    with op.batch_alter_table("attribution_touchpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attribution_touchpoints_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_attribution_touchpoints_attribution_id"))

    op.drop_table("attribution_touchpoints")
    op.drop_table("agent_state")
