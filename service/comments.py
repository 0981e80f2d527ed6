"""Storing submitted comments: every field kept, idempotent on (site, external_id).

One INSERT ... ON CONFLICT DO NOTHING RETURNING id: the common case is a single statement, and a concurrent or
repeated submission of the same external_id finds the stored comment instead of failing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from service.api.schemas import CommentIn
from service.models import Comment, CommentStatus, Site


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(site_id: int, data: CommentIn, source: str, is_test: bool) -> dict[str, Any]:
    return {
        "site_id": site_id,
        "external_id": data.external_id,
        "content": data.content,
        "author_name": data.author.name,
        "author_email": data.author.email,
        "author_url": data.author.url,
        "author_ip": data.author.ip,
        "user_agent": data.author.user_agent,
        "post_url": data.post.url,
        "post_title": data.post.title,
        "post_excerpt": data.post.excerpt,
        "post_published_at": _utc(data.post.published_at),
        "type": data.type,
        "parent_external_id": data.parent_external_id,
        "lang": data.lang,
        "created_at": _utc(data.created_at),
        "referrer": data.referrer,
        "honeypot": data.honeypot,
        "meta": data.meta,
        "is_test": is_test,
        "source": source,
        "status": CommentStatus.PENDING,
        "received_at": datetime.now(UTC),
        "reasons": [],
        "categories": {},
        "model_versions": {},
        "enqueue_count": 0,
    }


@cache
def _insert(dialect: str) -> ReturningInsert[Any]:
    """The INSERT statement, built once per dialect: values go in as parameters so SQLAlchemy caches it compiled."""
    table = cast(Table, Comment.__table__)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=["site_id", "external_id"]).returning(table.c.id)


def insert_comment(
    session: Session, site_id: int, data: CommentIn, *, source: str = "api", is_test: bool = False
) -> tuple[int, bool]:
    """Insert the comment as pending (not committed); returns (id, created). A resubmission returns the stored id."""
    statement = _insert(session.get_bind().dialect.name)
    new_id = session.execute(statement, _row(site_id, data, source, is_test)).scalar()
    if new_id is not None:
        return int(new_id), True
    existing = session.execute(
        select(Comment.id).where(Comment.site_id == site_id, Comment.external_id == data.external_id)
    ).scalar_one()
    return int(existing), False


def store_comment(
    session: Session, site: Site, data: CommentIn, *, source: str = "api", is_test: bool = False
) -> tuple[Comment, bool]:
    """Like ``insert_comment``, returning the ORM object (for callers that go on working with it)."""
    comment_id, created = insert_comment(session, site.id, data, source=source, is_test=is_test)
    comment = session.get(Comment, comment_id)
    assert comment is not None
    return comment, created


def lock_in_id_order(session: Session, where: list[ColumnElement[bool]], *, key_share: bool) -> list[int]:
    """Lock the comments matching ``where`` in ascending id order, and return their ids.

    A bulk moderation locks comments in id order (service.moderation.actions.moderate). An UPDATE or DELETE of many
    rows locks them in its plan's order instead (table or index order), so it could hold a row a moderator waits for
    while waiting for one the moderator holds, and PostgreSQL aborts one of them as a deadlock: the retention purge
    and the personal-data erase lock first, with this. ``key_share``: FOR NO KEY UPDATE, the lock an UPDATE that
    keeps the id takes, which lets others insert rows referencing the comment meanwhile; a DELETE needs FOR UPDATE.
    SQLite ignores it all: its one write lock is taken whole.
    """
    stmt = select(Comment.id).where(*where).order_by(Comment.id)
    return list(session.scalars(stmt.with_for_update(key_share=key_share)))
