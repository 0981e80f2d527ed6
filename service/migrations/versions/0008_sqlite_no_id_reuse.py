"""SQLite never gives a deleted row's id to a new row: the tables whose rows get deleted take ids by AUTOINCREMENT

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The tables of service.models.NO_ID_REUSE: their rows are deleted (retention purge and its cascades, an admin
# removing a list entry) and their ids are seen outside the row (API, callbacks, Akismet, audit log, UI forms).
TABLES = ("comments", "moderation_events", "labels", "callback_deliveries", "list_entries")


def upgrade() -> None:
    # PostgreSQL's sequences never hand out a number twice: nothing to do there.
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=True)
    # The copy leaves sqlite_sequence at each table's largest id; new ids must also pass the ids known elsewhere:
    # a retrain run's last_label_id (the schedule counts labels above it as new) may name a label since deleted.
    for table in TABLES:
        floor = f"SELECT max(id) FROM {table}"
        if table == "labels":
            floor = f"SELECT max(coalesce(({floor}), 0), coalesce((SELECT max(last_label_id) FROM retrain_runs), 0))"
        _raise_sequence(table, op.get_bind().execute(sa.text(floor)).scalar() or 0)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=False)


def _rebuild(autoincrement: bool) -> None:
    """Copy each table into one declared with (or without) AUTOINCREMENT: SQLite cannot alter a primary key.

    Every row, column, index, unique constraint and foreign key (with its ON DELETE) is copied, the ids with them;
    env.py turns foreign keys off meanwhile, or dropping the old table would cascade to the rows that reference it.
    """
    # An index on an expression cannot be reflected to be copied: dropped before and made again after (as 0004).
    op.drop_index("ix_comments_author_email_lower", table_name="comments")
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass  # nothing to alter: the rebuild is the change
    op.create_index("ix_comments_author_email_lower", "comments", [sa.text("lower(author_email)"), "site_id"])


def _raise_sequence(table: str, floor: int) -> None:
    """The next id of ``table`` will be above ``floor`` (and above any it gave before)."""
    bind = op.get_bind()
    params = {"table": table, "floor": floor}
    updated = bind.execute(
        sa.text("UPDATE sqlite_sequence SET seq = max(seq, :floor) WHERE name = :table"), params
    ).rowcount
    if not updated and floor:
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :floor)"), params)
