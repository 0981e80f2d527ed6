"""The comment-check answer: the decision → Akismet mapping, and the web fallback that keeps one stored decision."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from service.akismet.checking import StoredDecision, decide_within, stored_decision
from service.akismet.views import check_answer
from service.api.schemas import CommentIn
from service.comments import store_comment
from service.db import session_scope
from service.decisions.attempts import gave_up_reason, kept_failing_reason
from service.decisions.engine import after_decided, decide_pending
from service.models import Comment, ModerationEvent, Site
from service.scoring import scorer_identity
from tests.conftest import forget_scoring_successes
from tests.service.test_scoring_attempts import _die_inside_an_attempt


@pytest.mark.parametrize(
    ("decision", "status", "hold_is_spam", "body", "discard"),
    [
        ("approve", "decided", True, "false", False),
        ("reject", "decided", True, "true", True),
        ("reject", "decided", False, "true", True),
        ("hold", "decided", True, "true", False),
        ("hold", "decided", False, "false", False),
        (None, "pending", True, "true", False),  # not decided in time: treated like a hold
        (None, "pending", False, "false", False),
    ],
)
def test_answer_mapping(
    app: Any, decision: str | None, status: str, hold_is_spam: bool, body: str, discard: bool
) -> None:
    with app.test_request_context():
        response = check_answer(StoredDecision(42, status, decision, None), hold_is_spam)
    assert response.status_code == 200 and response.get_data(as_text=True) == body
    assert response.headers["X-akismet-guid"] == "42"
    assert ("X-akismet-pro-tip" in response.headers) is discard
    if discard:
        assert response.headers["X-akismet-pro-tip"] == "discard"


def _pending_comment(site_id: int, author: str, content: str = "Great post") -> int:
    with session_scope() as session:
        site = session.get(Site, site_id)
        assert site is not None
        data = CommentIn.model_validate({"content": content, "author": {"name": author, "ip": "192.0.2.1"}})
        comment, _ = store_comment(session, site, data, source="akismet")
        return comment.id


def _worker_decides(comment_id: int) -> None:
    """What the worker's scoring task does for a batch holding this comment."""
    with session_scope() as session:
        after_decided(decide_pending(session, [comment_id], decided_by="worker"))


def _events(comment_id: int) -> int:
    with session_scope() as session:
        return int(
            session.scalar(select(func.count(ModerationEvent.id)).where(ModerationEvent.comment_id == comment_id)) or 0
        )


def test_web_fallback_decides_once_and_the_worker_changes_nothing(app: Any, site: dict[str, Any]) -> None:
    """No worker answered within the budget (0 ms here): the web process decides with the same code."""
    comment_id = _pending_comment(site["id"], "viagra-test-123")
    outcome = decide_within(comment_id, 0, enqueue=False)
    assert (outcome.status, outcome.decision, outcome.category) == ("decided", "reject", "spam")
    with session_scope() as session:
        comment = session.get(Comment, comment_id)
        assert comment is not None and comment.decided_by == "web"
        decided_at = comment.decided_at
    assert _events(comment_id) == 1

    _worker_decides(comment_id)  # the late (or redelivered) worker task: it finds the comment decided
    after = stored_decision(comment_id)
    assert (after.status, after.decision) == ("decided", "reject")
    with session_scope() as session:
        comment = session.get(Comment, comment_id)
        assert comment is not None and (comment.decided_by, comment.decided_at) == ("web", decided_at)
    assert _events(comment_id) == 1


def test_worker_first_then_fallback_changes_nothing(app: Any, site: dict[str, Any]) -> None:
    comment_id = _pending_comment(site["id"], "Ada")
    _worker_decides(comment_id)
    first = stored_decision(comment_id)
    assert first.status == "decided"
    again = decide_within(comment_id, 0, enqueue=False)
    assert again == first
    assert _events(comment_id) == 1


def test_web_fallback_counts_its_attempt_and_holds_a_comment_out_of_attempts(
    app: Any, site: dict[str, Any], bouncer_env: dict[str, str]
) -> None:
    """The fallback scores with the worker's bound: a comment three processes died on is held, unscored."""
    from service import redis_bus

    fine = _pending_comment(site["id"], "Ada")
    assert decide_within(fine, 0, enqueue=False).decision == "approve"
    assert redis_bus.unfinished_scoring_attempts([fine]) == {fine: 0}  # it returned: nothing stays counted

    poison = _pending_comment(site["id"], "viagra-test-123")  # would be rejected if anything evaluated it
    for _ in range(3):
        _die_inside_an_attempt(bouncer_env, [poison])
    outcome = decide_within(poison, 0, enqueue=False)
    assert (outcome.status, outcome.decision) == ("decided", "hold")
    with session_scope() as session:
        comment = session.get(Comment, poison)
        assert comment is not None
        assert (comment.decided_by, comment.spam_score, comment.reasons) == (
            "web",
            None,
            ["automatic scoring failed 3 times; held for a moderator"],
        )


@pytest.fixture
def breaking_scorer() -> Iterator[str]:
    """In this process, scoring a pending comment whose text carries the returned marker raises (as in a worker of
    tests/service/crashing_worker.py)."""
    from tests.service.crashing_worker import BREAKS_EVERY_TIME, _poison_marked

    event.listen(Comment, "load", _poison_marked)
    try:
        yield BREAKS_EVERY_TIME
    finally:
        event.remove(Comment, "load", _poison_marked)


def test_web_fallback_counts_a_failed_scoring_as_the_worker_does(
    app: Any, site: dict[str, Any], breaking_scorer: str
) -> None:
    """A comment whose scoring raised in the fallback was not counted: it could fail any number of times. As in the
    worker, it is its own fault (a failed attempt) only while scoring works, and held once out of attempts."""
    from service import redis_bus

    forget_scoring_successes()
    poison = _pending_comment(site["id"], "Mallory", f"{breaking_scorer} a text the scorer cannot handle")
    assert decide_within(poison, 0, enqueue=False).status == "pending"
    assert redis_bus.unfinished_scoring_attempts([poison]) == {poison: 0}  # maybe the model: nothing to compare

    fine = _pending_comment(site["id"], "Ada")
    assert decide_within(fine, 0, enqueue=False).status == "decided"
    scorer = scorer_identity()
    assert scorer is not None and redis_bus.scoring_succeeded_recently(scorer)  # the fallback's scoring works
    for failed in range(1, 4):
        assert decide_within(poison, 0, enqueue=False).status == "pending"
        assert redis_bus.unfinished_scoring_attempts([poison]) == {poison: failed}
    outcome = decide_within(poison, 0, enqueue=False)
    assert (outcome.status, outcome.decision) == ("decided", "hold")
    with session_scope() as session:
        comment = session.get(Comment, poison)
        assert comment is not None and comment.reasons == [gave_up_reason(3)]


def test_web_fallback_notes_an_unblamed_failure_and_holds_once_scoring_kept_failing(
    app: Any, site: dict[str, Any], breaking_scorer: str
) -> None:
    """In the fallback as in the worker, a comment that fails with nothing to compare (maybe the model) is not blamed
    but its failure is noted; once BOUNCER_SCORE_MAX_ATTEMPTS (3) such failures span BOUNCER_SCORE_GIVE_UP_SECONDS
    (1 s here) it is held for a moderator, unscored, with the reason."""
    from service import redis_bus
    from service.config import settings

    forget_scoring_successes()
    poison = _pending_comment(site["id"], "Mallory", f"{breaking_scorer} a text the scorer cannot handle")
    os.environ["BOUNCER_SCORE_GIVE_UP_SECONDS"] = "1"
    settings.cache_clear()
    try:
        for failed in range(1, 4):
            assert decide_within(poison, 0, enqueue=False).status == "pending"
            assert redis_bus.unblamed_scoring_failures([poison])[poison].count == failed
            time.sleep(0.6)  # the three failures span 1.2 s
        assert redis_bus.unfinished_scoring_attempts([poison]) == {poison: 0}  # none was blamed
        outcome = decide_within(poison, 0, enqueue=False)
        assert (outcome.status, outcome.decision) == ("decided", "hold")
        with session_scope() as session:
            comment = session.get(Comment, poison)
            assert comment is not None
            assert (comment.decided_by, comment.spam_score, comment.reasons) == ("web", None, [kept_failing_reason(1)])
        assert kept_failing_reason(1) == "automatic scoring kept failing for 1 second; held for a moderator"
        assert _events(poison) == 1
    finally:
        del os.environ["BOUNCER_SCORE_GIVE_UP_SECONDS"]
        settings.cache_clear()
