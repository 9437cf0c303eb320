"""a visitor's row version: per-visitor ordering across processes, checked at commit

A batch is judged on the visitor's live state, read before its transaction; the
transaction that writes it bumps ``visitors.version`` only if it still equals the version
that state was read at (compare-and-set). A second writer let in by an expired lock, or a
process holding a stale state, is refused by the database and judges its batch again on
the stored truth. Existing visitors start at 0, what a state read from them says.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.add_column(
            sa.Column("version", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.drop_column("version")
