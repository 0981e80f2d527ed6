"""author e-mails compare case-insensitively: index lower(author_email) instead of author_email

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_comments_site_author_email", table_name="comments")
    # The expression must read as service.models.author_email_in() writes it, or the planner will not use it.
    op.create_index("ix_comments_author_email_lower", "comments", [sa.text("lower(author_email)"), "site_id"])


def downgrade() -> None:
    op.drop_index("ix_comments_author_email_lower", table_name="comments")
    op.create_index("ix_comments_site_author_email", "comments", ["site_id", "author_email"])
