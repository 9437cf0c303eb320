"""routing decisions: candidates and holds; attributions by KPI outcome id

Every decision keeps the agents that were eligible and free (what an off-policy estimate
may choose among), and a held interaction when it was first passed over, so the hold times
out the same way in every server process. An outcome attribution keeps the outcome id of
the KPI it reports (until now the record's id was called its outcome id).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("candidates", sa.Text(), nullable=True))
        batch.add_column(sa.Column("held_since", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("outcome_attributions") as batch:
        batch.add_column(sa.Column("outcome_id", sa.String(length=128), nullable=True))
        batch.create_index(batch.f("ix_outcome_attributions_outcome_id"), ["outcome_id"])


def downgrade() -> None:
    with op.batch_alter_table("outcome_attributions") as batch:
        batch.drop_index(batch.f("ix_outcome_attributions_outcome_id"))
        batch.drop_column("outcome_id")
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("held_since")
        batch.drop_column("candidates")
