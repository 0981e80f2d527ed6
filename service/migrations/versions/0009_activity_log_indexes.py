"""the admin's activity log pages through moderation_events newest first: (created_at, id) indexes, all and by site
and by actor, in place of the single-column created_at and site_id ones

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Each index leads with what a filter fixes (nothing, a site, an actor) and then orders by time and id, so a page
    # of the log, with or without a date range, is a walk of one index that stops after the page. The old indexes are
    # their prefixes: lookups by site_id alone (a site's deletion cascading here) use the new one.
    op.create_index("ix_moderation_events_created_id", "moderation_events", ["created_at", "id"])
    op.create_index("ix_moderation_events_site_created_id", "moderation_events", ["site_id", "created_at", "id"])
    op.create_index("ix_moderation_events_actor_created_id", "moderation_events", ["actor", "created_at", "id"])
    op.drop_index("ix_moderation_events_created_at", table_name="moderation_events")
    op.drop_index("ix_moderation_events_site_id", table_name="moderation_events")


def downgrade() -> None:
    op.create_index("ix_moderation_events_site_id", "moderation_events", ["site_id"])
    op.create_index("ix_moderation_events_created_at", "moderation_events", ["created_at"])
    op.drop_index("ix_moderation_events_actor_created_id", table_name="moderation_events")
    op.drop_index("ix_moderation_events_site_created_id", table_name="moderation_events")
    op.drop_index("ix_moderation_events_created_id", table_name="moderation_events")
