"""Re-enqueue work the queue lost: comments still pending (broker down, worker died) and overdue callbacks."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from service import queue
from service.callbacks import overdue_deliveries
from service.config import settings
from service.db import session_scope
from service.models import Comment, CommentStatus

log = logging.getLogger(__name__)


def sweep(limit: int = 2000) -> dict[str, int]:
    """One sweep; returns how many comments and callbacks were re-enqueued."""
    cutoff = datetime.now(UTC) - timedelta(seconds=settings().sweep_after_seconds)
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(Comment.id)
                .where(Comment.status == CommentStatus.PENDING, Comment.received_at < cutoff)
                .order_by(Comment.id)
                .limit(limit)
            )
        )
        if ids:
            session.execute(update(Comment).where(Comment.id.in_(ids)).values(enqueue_count=Comment.enqueue_count + 1))
    comments = len(ids) if ids and queue.enqueue_score(ids) else 0
    deliveries = overdue_deliveries()
    callbacks = len(deliveries) if deliveries and queue.enqueue_callbacks(deliveries) else 0
    if comments or callbacks:
        log.info("sweeper re-enqueued %s comments and %s callbacks", comments, callbacks)
    return {"comments": comments, "callbacks": callbacks}
