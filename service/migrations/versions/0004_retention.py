"""data retention: erased personal data, counts of deleted rejects, indexes the purge reads and cascades through

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 05:00:00
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
        "deleted_reject_counts",
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("comments", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site_id", "day"),
    )
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("personal_data_erased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_comments_erased_received", "comments", ["personal_data_erased_at", "received_at"])
    op.create_index("ix_callback_deliveries_status_created", "callback_deliveries", ["status", "created_at"])
    # Deleting a comment cascades to its events and from each event to its deliveries: without it, a scan each.
    op.create_index("ix_callback_deliveries_event_id", "callback_deliveries", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_callback_deliveries_event_id", table_name="callback_deliveries")
    op.drop_index("ix_callback_deliveries_status_created", table_name="callback_deliveries")
    op.drop_index("ix_comments_erased_received", table_name="comments")
    # On SQLite the batch copies the table, and an index on an expression cannot be reflected to copy with it:
    # dropped before and made again after, or the copy loses it and 0003's downgrade finds nothing to drop.
    op.drop_index("ix_comments_author_email_lower", table_name="comments")
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.drop_column("personal_data_erased_at")
    op.create_index("ix_comments_author_email_lower", "comments", [sa.text("lower(author_email)"), "site_id"])
    op.drop_table("deleted_reject_counts")
