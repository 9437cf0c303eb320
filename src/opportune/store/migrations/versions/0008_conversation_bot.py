"""a conversation's bot and wrap-up notes

The bot flow a conversation runs, its state between turns (JSON) and the intent it
detected — shown to the agent and given to the routing model — and the agent's notes
beside the wrap-up code.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("bot_flow", sa.String(64), nullable=True))
        batch.add_column(sa.Column("bot_state", sa.Text(), nullable=True))
        batch.add_column(sa.Column("intent", sa.String(64), nullable=True))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        for name in ("notes", "intent", "bot_state", "bot_flow"):
            batch.drop_column(name)
