"""A commenter's personal data on request: the rights of access and erasure (GDPR articles 15 and 17).

A blog passes on its commenters' requests -- WordPress's personal data exporter and eraser tools ask by e-mail
address -- through the API (``/api/v1/personal-data/export`` and ``/erase``), an admin uses the site's page in the
admin console (``service.admin.personal_data_page``) or an operator runs ``bouncer personal-data``. An author is
found by e-mail address within one site, whatever its case, also where the retention purge already pseudonymised it
(``author_email_in``).

Erasure empties what identifies the author -- name, e-mail, website, IP, user agent, referrer -- and ``meta`` (free-
form: the blog may have put anything there). The text, the post, the decision, the scores and the labels stay, as
WordPress's own eraser keeps a comment's text: the text belongs to the blog's discussion and, with its label, is
training data. What is emptied is gone (not pseudonymised as the purge does), so the author's later comments start
without a history; the stream checks forget the address too (``stream.forget_author``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from service.comments import lock_in_id_order
from service.decisions import stream
from service.models import Comment, author_email_in
from service.views import utc_iso

log = logging.getLogger(__name__)

EXPORT_PAGE_SIZE = 100


def _authors_comments(site_id: int, email: str) -> list[ColumnElement[bool]]:
    return [Comment.site_id == site_id, author_email_in([email])]


def personal_record(c: Comment) -> dict[str, Any]:
    """What Bouncer keeps of one comment about its author, as the export shows it."""
    return {
        "id": c.id,
        "external_id": c.external_id,
        "received_at": utc_iso(c.received_at),
        "content": c.content,
        "author": {
            "name": c.author_name,
            "email": c.author_email,
            "url": c.author_url,
            "ip": c.author_ip,
            "user_agent": c.user_agent,
        },
        "referrer": c.referrer,
        "post_url": c.post_url,
        "meta": dict(c.meta or {}),
        "decision": c.decision,
        "personal_data_erased_at": utc_iso(c.personal_data_erased_at),
    }


def export_page(session: Session, site_id: int, email: str, page: int) -> tuple[list[dict[str, Any]], bool]:
    """Page ``page`` (from 1) of the author's comments on the site, oldest first, and whether it is the last."""
    rows = session.scalars(
        select(Comment)
        .where(*_authors_comments(site_id, email))
        .order_by(Comment.id)
        .offset((page - 1) * EXPORT_PAGE_SIZE)
        .limit(EXPORT_PAGE_SIZE + 1)
    ).all()
    return [personal_record(c) for c in rows[:EXPORT_PAGE_SIZE]], len(rows) <= EXPORT_PAGE_SIZE


def export_all(session: Session, site_id: int, email: str) -> Iterator[dict[str, Any]]:
    """Every page of the export in turn: the whole of what the site keeps about the author (a download, the CLI)."""
    for page in itertools.count(1):
        records, done = export_page(session, site_id, email, page)
        yield from records
        if done:
            return


def comment_count(session: Session, site_id: int, email: str) -> int:
    """How many of the site's comments the export finds for the address (all its pages)."""
    return session.scalar(select(func.count()).select_from(Comment).where(*_authors_comments(site_id, email))) or 0


def erase(session: Session, site_id: int, email: str) -> int:
    """Erase the author's personal data from their comments on the site; how many comments had it."""
    # Locked in id order first, as bulk moderation and the retention purge lock them (lock_in_id_order).
    ids = lock_in_id_order(session, _authors_comments(site_id, email), key_share=True)
    if ids:
        session.execute(
            update(Comment)
            .where(Comment.id.in_(ids))
            .values(
                author_name="",
                author_email="",
                author_url="",
                author_ip="",
                user_agent="",
                referrer="",
                meta={},
                personal_data_erased_at=datetime.now(UTC),
            )
            .execution_options(synchronize_session=False)
        )
        log.info("erased the personal data of %d comments of site %d on request", len(ids), site_id)
    try:  # also when no comment is left: the first-sight marker outlives the purged ones
        stream.forget_author(site_id, email)
    except redis.RedisError:  # it expires on its own; the database holds what matters
        log.warning("could not delete the stream checks' records of an erased author of site %d", site_id)
    return len(ids)
