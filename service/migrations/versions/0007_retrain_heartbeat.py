"""retrain runs keep one-at-a-time and liveness in the database: a heartbeat and a unique running slot

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A running run holds running_slot = 1 and every other run NULL: a unique index on a nullable column admits one
    # 1 and any number of NULLs on SQLite and on PostgreSQL alike (a partial index, WHERE status = 'running', would
    # do too, but its predicate is spelled per dialect). No backfill: a run left running by the Redis-lock code has
    # no heartbeat and no slot, and is ended as interrupted once it is older than the dead-after age.
    with op.batch_alter_table("retrain_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("running_slot", sa.Integer(), nullable=True))
        batch_op.create_index("uq_retrain_runs_running_slot", ["running_slot"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("retrain_runs", schema=None) as batch_op:
        batch_op.drop_index("uq_retrain_runs_running_slot")
        batch_op.drop_column("running_slot")
        batch_op.drop_column("heartbeat_at")
