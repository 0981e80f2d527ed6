"""Re-enqueue work the queue lost: comments still pending (broker down, worker died), overdue callbacks and queued
retrain runs whose task is gone."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import select, update

from service import queue, redis_bus
from service.callbacks import overdue_deliveries
from service.config import settings
from service.db import session_scope
from service.models import Comment, CommentStatus

log = logging.getLogger(__name__)


def _room(queue_name: str, limit: int) -> int:
    """How many messages a sweep may add to a queue: up to ``limit`` waiting in all.

    A pending comment whose message still waits in the queue is not lost, only late. While no worker consumes
    (all down, or far behind) every sweep would push the same comments again -- ``limit`` messages every
    interval, until Redis runs out of memory -- so a sweep only tops the queue up to ``limit``. When the broker
    cannot tell, the sweep goes ahead: re-sending is the safe side.
    """
    waiting = queue.waiting(queue_name)
    return limit if waiting is None else max(0, limit - waiting)


def _resend_lost_retrains() -> int:
    """Send again the task of each queued retrain run that lost it (``retraining.lost_runs``), at most once per
    ``RESEND_QUEUED_SECONDS`` each, and only while no message waits in the retrain queue: one that waits is not lost
    (the retrain worker is down or busy). A queue the broker does not know (emptied by a restart) waits nothing."""
    if queue.waiting("retrain"):
        return 0
    from service import retraining

    with session_scope() as session:
        lost = retraining.lost_runs(session)
    sent = 0
    for run_id, kind, requested_by in lost:
        try:
            due = redis_bus.claim_retrain_resend(run_id, retraining.RESEND_QUEUED_SECONDS)
        except redis.RedisError:  # Redis down: it would not take the task either; the next sweep tries again
            log.warning("could not check when retrain run %s was last sent", run_id, exc_info=True)
            return sent
        if due and queue.enqueue_retrain(kind, requested_by, run_id):
            log.warning("retrain run %s (%s) was queued with no task: sent again", run_id, kind)
            sent += 1
    return sent


def sweep(limit: int = 2000, callback_limit: int = 500) -> dict[str, int]:
    """One sweep; returns how many comments, callbacks and retrain runs were re-enqueued."""
    cutoff = datetime.now(UTC) - timedelta(seconds=settings().sweep_after_seconds)
    ids: list[int] = []
    room = _room("score", limit)
    if room:
        with session_scope() as session:
            ids = list(
                session.scalars(
                    select(Comment.id)
                    .where(Comment.status == CommentStatus.PENDING, Comment.received_at < cutoff)
                    .order_by(Comment.id)
                    .limit(room)
                )
            )
            if ids:
                session.execute(
                    update(Comment).where(Comment.id.in_(ids)).values(enqueue_count=Comment.enqueue_count + 1)
                )
    comments = len(ids) if ids and queue.enqueue_score(ids) else 0
    room = _room("callbacks", callback_limit)
    deliveries = overdue_deliveries(room) if room else []
    callbacks = len(deliveries) if deliveries and queue.enqueue_callbacks(deliveries) else 0
    retrains = _resend_lost_retrains()
    if comments or callbacks:
        log.info("sweeper re-enqueued %s comments and %s callbacks", comments, callbacks)
    return {"comments": comments, "callbacks": callbacks, "retrains": retrains}
