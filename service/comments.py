"""Storing submitted comments: every field kept, idempotent on (site, external_id)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.api.schemas import CommentIn
from service.models import Comment, CommentStatus, Site


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def existing_comment(session: Session, site: Site, external_id: str | None) -> Comment | None:
    if external_id is None:
        return None
    return session.scalars(
        select(Comment).where(Comment.site_id == site.id, Comment.external_id == external_id)
    ).first()


def store_comment(
    session: Session, site: Site, data: CommentIn, *, source: str = "api", is_test: bool = False
) -> tuple[Comment, bool]:
    """Insert the comment as pending and flush; returns (comment, created). A resubmission returns the stored one."""
    found = existing_comment(session, site, data.external_id)
    if found is not None:
        return found, False
    comment = Comment(
        site_id=site.id,
        external_id=data.external_id,
        content=data.content,
        author_name=data.author.name,
        author_email=data.author.email,
        author_url=data.author.url,
        author_ip=data.author.ip,
        user_agent=data.author.user_agent,
        post_url=data.post.url,
        post_title=data.post.title,
        post_excerpt=data.post.excerpt,
        post_published_at=_utc(data.post.published_at),
        type=data.type,
        parent_external_id=data.parent_external_id,
        lang=data.lang,
        created_at=_utc(data.created_at),
        referrer=data.referrer,
        honeypot=data.honeypot,
        meta=data.meta,
        is_test=is_test,
        source=source,
        status=CommentStatus.PENDING,
        received_at=datetime.now(UTC),
        reasons=[],
        categories={},
        model_versions={},
    )
    comment.site = site
    try:
        with session.begin_nested():
            session.add(comment)
            session.flush()
    except IntegrityError:
        # A concurrent resubmission with the same external_id won the insert: answer with that one.
        found = existing_comment(session, site, data.external_id)
        if found is None:
            raise
        return found, False
    return comment, True
