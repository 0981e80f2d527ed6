"""retrain runs record the newest label id they collected: the schedule counts labels stored after it as new

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No backfill: what an older run collected is unknown, and the schedule falls back to its created_at.
    with op.batch_alter_table("retrain_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_label_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("retrain_runs", schema=None) as batch_op:
        batch_op.drop_column("last_label_id")
