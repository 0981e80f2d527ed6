"""An answer within an Akismet client's timeout: wait for the worker, else decide here with the same code.

Akismet clients block on comment-check (the Python client gives up after 1 s), so the comment goes through the
queue with a budget of ``BOUNCER_AKISMET_WAIT_MS``; when no worker answers in time the web process runs the same
``decide_pending``. Whoever commits first wins (a conditional update), the other changes nothing, and the answer is
read from what was stored.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from service import queue, redis_bus
from service.db import new_session, session_scope
from service.models import Comment, CommentStatus

log = logging.getLogger(__name__)

_warm_lock = threading.Lock()
_warmed_pids: set[int] = set()


@dataclass(frozen=True)
class StoredDecision:
    """What comment-check answers from: the comment's status and disposition."""

    comment_id: int
    status: str
    decision: str | None
    category: str | None

    @classmethod
    def of(cls, comment: Comment) -> StoredDecision:
        return cls(comment.id, comment.status, comment.decision, comment.category)

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> StoredDecision:
        return cls(int(view["id"]), str(view["status"]), view.get("decision"), view.get("category"))


def warm_models() -> None:
    """Load the active models in a background thread, once per process, so the fallback scores without delay."""
    pid = os.getpid()
    with _warm_lock:
        if pid in _warmed_pids:
            return
        _warmed_pids.add(pid)
    threading.Thread(target=_load_models, name="bouncer-warm-models", daemon=True).start()


def _load_models() -> None:
    try:
        from service.scoring import active_models

        active_models()
    except Exception:  # no model yet is not fatal here: the fallback will report it when it is needed
        log.warning("could not preload the models in the web process", exc_info=True)


def decide_within(comment_id: int, budget_ms: int, *, enqueue: bool = True) -> StoredDecision:
    """Queue the comment, wait up to ``budget_ms`` for the worker's decision, else decide it in this process."""
    if enqueue:
        queue.enqueue_score([comment_id])
    try:
        notified = redis_bus.wait_decided(comment_id, budget_ms)
    except Exception:  # Redis down: decide here rather than leave the blog without an answer
        log.warning("could not wait for comment %s", comment_id, exc_info=True)
        notified = None
    if notified is not None and notified.get("status") == CommentStatus.DECIDED:
        return StoredDecision.from_view(notified)
    _decide_here(comment_id)
    return stored_decision(comment_id)


def _decide_here(comment_id: int) -> None:
    # Imported here: only the fallback needs the scorer, and the worker module graph is heavy.
    from sqlalchemy.exc import OperationalError

    from service.decisions.attempts import count_failures, plan_attempts, scoring_attempt, scoring_worked
    from service.decisions.engine import after_decided, decide_pending
    from service.scoring import scorer_identity

    # Counted like the worker's attempts: a comment that kills the process scoring it must not take down a web
    # process with every resubmission, and one given up on is held unscored here too.
    plan = plan_attempts([comment_id])
    hold = plan.held.get(comment_id, "")
    counted = [] if hold else [comment_id]
    try:
        with scoring_attempt(counted), session_scope() as session:
            decided = decide_pending(session, [comment_id], decided_by="web", hold_without_scoring=hold)
            after_decided(decided)
    except OperationalError:  # the database, not the comment: nothing counted; the sweeper re-enqueues it
        log.exception("the web fallback could not decide comment %s", comment_id)
        return
    except Exception:  # the comment stays pending in the database; the sweeper re-enqueues it
        log.exception("the web fallback could not decide comment %s", comment_id)
        # The worker's rule for a comment that fails alone: its fault (a failed attempt) only while scoring works,
        # else an unblamed failure, held once they went on for BOUNCER_SCORE_GIVE_UP_SECONDS.
        count_failures(counted, tried_alone=1, decided_any=False, scorer=scorer_identity())
        return
    if counted and decided.comments:
        scoring_worked(scorer_identity())


def stored_decision(comment_id: int) -> StoredDecision:
    session = new_session()
    try:
        comment = session.get(Comment, comment_id)
        if comment is None:  # deleted meanwhile (a purge); answer as if still undecided
            return StoredDecision(comment_id, CommentStatus.PENDING, None, None)
        return StoredDecision.of(comment)
    finally:
        session.close()
