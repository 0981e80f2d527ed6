"""Enqueueing tasks from the web side: after the commit, failing fast when the broker is down.

A comment that could not be enqueued stays ``pending`` in the database; the sweeper enqueues it later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

# A down broker must not hold a request: one quick try, then leave it to the sweeper.
_PUBLISH = {"retry": False}


def enqueue_score(comment_ids: Sequence[int]) -> bool:
    """Queue scoring of these comments; False when the broker could not take them."""
    from workers.tasks import score_comment

    try:
        for cid in comment_ids:
            score_comment.apply_async((cid,), **_PUBLISH)
    except Exception:  # the broker is down or slow: the sweeper re-enqueues pending comments
        log.warning("could not enqueue scoring of %s", list(comment_ids), exc_info=True)
        return False
    return True


def enqueue_callbacks(delivery_ids: Sequence[int]) -> bool:
    from workers.tasks import deliver_callback

    try:
        for did in delivery_ids:
            deliver_callback.apply_async((did,), **_PUBLISH)
    except Exception:  # the sweeper re-enqueues pending deliveries
        log.warning("could not enqueue callbacks %s", list(delivery_ids), exc_info=True)
        return False
    return True


def enqueue_retrain(kind: str, requested_by: str, run_id: int) -> bool:
    """Queue the retrain of a queued run; False when the broker could not take it."""
    from workers.retrain_tasks import retrain

    try:
        retrain.apply_async((kind, requested_by, run_id), **_PUBLISH)
    except Exception:  # the broker is down: the sweeper sends a queued run's task again (retraining.lost_runs)
        log.warning("could not enqueue retrain run %s", run_id, exc_info=True)
        return False
    return True


def waiting(queue_name: str) -> int | None:
    """Messages waiting in a broker queue (not yet taken by a worker); None when the broker cannot tell."""
    from workers.tasks import score_comment

    try:
        with score_comment.app.connection_for_write() as connection:
            declared = connection.default_channel.queue_declare(queue=queue_name, passive=True)
            return int(declared.message_count)
    except Exception:  # the broker is down, or the queue was never declared: the caller decides without it
        log.debug("could not read the length of queue %s", queue_name, exc_info=True)
        return None
