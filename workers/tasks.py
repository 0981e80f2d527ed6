"""Celery tasks: take ids, call domain functions, stay idempotent."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from celery_batches import Batches, SimpleRequest
from sqlalchemy.exc import OperationalError

from service.callbacks import attempt_delivery, backoff_seconds
from service.db import session_scope
from service.decisions.engine import after_decided, decide_pending
from service.sweeper import sweep

log = logging.getLogger(__name__)

# Buffer scoring messages up to this many, or this long, before scoring them together.
SCORE_BATCH_SIZE = 64
SCORE_BATCH_SECONDS = 0.01


@shared_task(
    name="bouncer.score_comment",
    base=Batches,
    flush_every=SCORE_BATCH_SIZE,
    flush_interval=SCORE_BATCH_SECONDS,
    acks_late=True,
    ignore_result=True,
)
def score_comment(requests: list[SimpleRequest]) -> None:
    """Decide pending comments; called as ``score_comment.delay(comment_id)``, run on a batch of them.

    Scoring a batch costs little more than scoring one, so the worker buffers messages for a few milliseconds.
    A redelivered message finds its comment decided and changes nothing; a failed batch is left to the sweeper.
    """
    ids = sorted({int(r.args[0]) for r in requests if r.args})
    for attempt in range(3):
        try:
            with session_scope() as session:
                decided = decide_pending(session, ids, decided_by="worker")
                after_decided(decided)
            return
        except OperationalError:  # a locked SQLite or a dropped connection: try again, then leave it to the sweeper
            log.warning("scoring batch failed (attempt %s)", attempt + 1, exc_info=True)
            time.sleep(0.2 * (attempt + 1))


@shared_task(name="bouncer.deliver_callback", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver_callback(self: object, delivery_id: int) -> str:
    """POST one signed callback; retry with exponential backoff; give up after the configured attempts."""
    outcome, attempts = attempt_delivery(delivery_id)
    if outcome == "retry":
        raise self.retry(countdown=backoff_seconds(attempts))  # type: ignore[attr-defined]  # bound task
    return outcome


@shared_task(name="bouncer.sweep_pending", acks_late=True, ignore_result=True)
def sweep_pending() -> dict[str, int]:
    """Re-enqueue comments left pending and callbacks whose retry was lost."""
    return sweep()
