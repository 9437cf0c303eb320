"""conversations and their messages

Web chats become durable: a conversation row per chat (state, queue, agent, heartbeat,
read marks, wrap-up) and its messages keyed by a per-conversation sequence, with the
client's message id unique so a resend is stored once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("visitor_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(32), nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("queue", sa.String(64), nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("offer", sa.String(64), nullable=True),
        sa.Column("registration", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("visitor_seen_at", sa.BigInteger(), nullable=False),
        sa.Column("visitor_read_seq", sa.Integer(), nullable=False),
        sa.Column("agent_read_seq", sa.Integer(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("wrap_up_code", sa.String(64), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    indexes = (["state", "visitor_seen_at"], ["visitor_id"], ["customer_id"], ["agent_id", "state"])
    for cols in indexes:
        op.create_index(op.f(f"ix_conversations_{'_'.join(cols)}"), "conversations", cols)
    op.create_table(
        "conversation_messages",
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(8), nullable=False),
        sa.Column("author", sa.String(64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name=op.f("pk_conversation_messages")),
        sa.UniqueConstraint(
            "conversation_id",
            "client_id",
            name=op.f("uq_conversation_messages_conversation_id_client_id"),
        ),
    )


def downgrade() -> None:
    op.drop_table("conversation_messages")
    op.drop_table("conversations")
