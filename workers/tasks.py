"""Celery tasks: take ids, call domain functions, stay idempotent."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import shared_task
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from sqlalchemy.exc import OperationalError

from service import retention
from service.callbacks import attempt_delivery, backoff_seconds
from service.db import session_scope
from service.decisions.attempts import count_failures, plan_attempts, scoring_attempt, scoring_worked
from service.decisions.engine import after_decided, decide_pending
from service.scoring import scorer_identity
from service.sweeper import sweep

log = logging.getLogger(__name__)

# Buffer scoring messages up to this many, or this long, before scoring them together.
SCORE_BATCH_SIZE = 64
SCORE_BATCH_SECONDS = 0.01


class HandBackBatches(Batches):
    """celery-batches whose messages are settled when the batch fails, not only when it returns.

    ``Batches.flush`` acks a late-acked batch only on success. When the pool process running it dies (kill -9, the
    OOM killer) the messages were neither acked nor rejected: they stayed unacked in the live worker, held its
    prefetch slots (a few such deaths and it takes no more messages at all) and came back only after the broker's
    visibility timeout (15 minutes). As Celery does for ordinary tasks with ``task_reject_on_worker_lost``, a lost
    worker now hands the batch back to the queue at once; any other failure acks it and leaves the comments (still
    pending in the database) to the sweeper. A comment that itself kills the process is not handed back for ever:
    ``score_comment`` scores it alone next time and holds it once its attempts run out (service.decisions.attempts).
    """

    def flush(self, requests: Collection[Request]) -> Any:
        acks_early = [r for r in requests if not r.task.acks_late]
        acks_late = [r for r in requests if r.task.acks_late]
        serializable = ([SimpleRequest.from_request(r) for r in requests],)
        requeue = bool(self.app.conf.task_reject_on_worker_lost)

        def on_accepted(pid: int, time_accepted: float) -> None:
            for req in acks_early:
                req.acknowledge()

        def on_return(result: Any) -> None:
            for req in acks_late:
                req.acknowledge()

        def on_error(einfo: Any) -> None:
            kind = getattr(einfo, "type", None)  # billiard's ExceptionInfo; its .exception is a traceback wrapper
            lost = isinstance(kind, type) and issubclass(kind, WorkerLostError)
            log.warning("scoring batch of %s messages failed%s", len(acks_late), " (worker lost)" if lost else "")
            for req in acks_late:
                if lost and requeue:
                    req.reject(requeue=True)
                else:
                    req.acknowledge()

        return self._pool.apply_async(
            apply_batches_task,
            (self, serializable, 0, None),
            accept_callback=on_accepted,
            callback=on_return,
            error_callback=on_error,
        )


@shared_task(
    name="bouncer.score_comment",
    base=HandBackBatches,
    flush_every=SCORE_BATCH_SIZE,
    flush_interval=SCORE_BATCH_SECONDS,
    acks_late=True,
    ignore_result=True,
)
def score_comment(requests: list[SimpleRequest]) -> None:
    """Decide pending comments; called as ``score_comment.delay(comment_id)``, run on a batch of them.

    Scoring a batch costs little more than scoring one, so the worker buffers messages for a few milliseconds.
    A redelivered message finds its comment decided and changes nothing; a failed batch is left to the sweeper.
    A batch whose scoring raises is scored again one comment at a time, so the comment the scorer cannot handle
    does not keep the others pending; comments an attempt died or failed on are scored one at a time, and held once
    they ran out of attempts, or their scoring kept failing for too long (service.decisions.attempts).
    """
    plan = plan_attempts(sorted({int(r.args[0]) for r in requests if r.args}))
    for reason, held in plan.held_by_reason().items():
        _decide(held, hold_without_scoring=reason)
    alone: list[int] = list(plan.alone)  # comments to score one at a time
    failed: list[int] = []  # comments that raised when scored alone
    decided_any = False
    if plan.together:
        try:
            with scoring_attempt(plan.together):
                decided_any = _decide(plan.together)
        except Exception:
            log.warning("scoring a batch of %s comments raised", len(plan.together), exc_info=True)
            if len(plan.together) == 1:
                failed.append(plan.together[0])  # it was alone already: no second try
            else:
                alone = plan.together + alone  # the innocent-looking first, then the suspects, fewest deaths first
    tried_alone = len(alone) + len(failed)
    for cid in alone:
        try:
            with scoring_attempt([cid]):
                decided_any = _decide([cid]) or decided_any
        except Exception:
            log.warning("scoring comment %s alone raised", cid, exc_info=not failed)  # one traceback is enough
            failed.append(cid)
    scorer = scorer_identity() if decided_any or failed else None
    if decided_any:
        scoring_worked(scorer)
    count_failures(failed, tried_alone=tried_alone, decided_any=decided_any, scorer=scorer)


def _decide(ids: list[int], hold_without_scoring: str = "") -> bool:
    """Decide those of ``ids`` still pending; True if it stored decisions, False if none (or the database failed)."""
    for attempt in range(3):
        try:
            with session_scope() as session:
                decided = decide_pending(session, ids, decided_by="worker", hold_without_scoring=hold_without_scoring)
                after_decided(decided)
            if hold_without_scoring and decided.comments:
                log.warning("comments %s held without scoring: %s", sorted(decided.comments), hold_without_scoring)
            return bool(decided.comments)
        except OperationalError:  # a locked SQLite or a dropped connection: try again, then leave it to the sweeper
            log.warning("scoring batch failed (attempt %s)", attempt + 1, exc_info=True)
            time.sleep(0.2 * (attempt + 1))
    return False


@shared_task(name="bouncer.deliver_callback", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver_callback(self: object, delivery_id: int) -> str:
    """POST one signed callback; retry with exponential backoff; give up after the configured attempts."""
    outcome, attempts = attempt_delivery(delivery_id)
    if outcome == "retry":
        raise self.retry(countdown=backoff_seconds(attempts))  # type: ignore[attr-defined]  # bound task
    return outcome


@shared_task(name="bouncer.sweep_pending", acks_late=True, ignore_result=True)
def sweep_pending() -> dict[str, int]:
    """Re-enqueue comments left pending, callbacks whose retry was lost and queued retrain runs with no task."""
    return sweep()


@shared_task(name="bouncer.purge", acks_late=True, ignore_result=True)
def purge() -> dict[str, Any]:
    """Hourly (beat): delete and erase what is past its retention (``service.retention``), a bounded amount a run."""
    return retention.purge(max_chunks=retention.TASK_MAX_CHUNKS).as_dict()
