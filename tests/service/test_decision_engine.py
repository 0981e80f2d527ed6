"""The decision engine against the database: trusted authors, list entries, one winner per comment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from service.api.schemas import CommentIn
from service.comments import insert_comment
from service.db import session_scope
from service.decisions.attempts import gave_up_reason
from service.decisions.engine import decide_pending, evaluate
from service.models import CallbackDelivery, Comment, ListEntry, ModerationEvent
from service.views import comment_view
from tests.conftest import free_port, make_site


def _store(site_id: int, content: str, email: str) -> int:
    with session_scope() as session:
        data = CommentIn.model_validate({"content": content, "author": {"email": email}})
        comment_id, _ = insert_comment(session, site_id, data)
        return comment_id


def test_a_previously_approved_author_is_trusted_whatever_the_case_of_the_email(site: dict[str, Any]) -> None:
    first = _store(site["id"], "Lovely write-up about winter pruning, thank you.", "Ada@Example.org")
    with session_scope() as session:
        stored = session.get(Comment, first)
        assert stored is not None
        stored.decision = "approve"
    second = _store(site["id"], "Following up on my earlier question about roses.", "ada@example.org")
    with session_scope() as session:
        comment = session.get(Comment, second)
        assert comment is not None
        ((outcome, extra),) = evaluate(session, [comment])
    assert "trusted_author" in extra["rule_codes"]


def test_an_allow_entry_approves_and_a_redelivery_changes_nothing(site: dict[str, Any]) -> None:
    with session_scope() as session:
        session.add(ListEntry(site_id=site["id"], action="block", kind="phrase", value="casino"))
        session.add(ListEntry(site_id=site["id"], action="allow", kind="email", value="editor@blog.example"))
    allowed = _store(
        site["id"], "Our casino review is up, CHECK IT OUT http://casino.example.top", "editor@blog.example"
    )
    blocked = _store(site["id"], "Best casino bonus ever", "someone@example.net")
    with session_scope() as session:
        decided = decide_pending(session, [allowed, blocked])
    assert decided.comments[allowed].decision == "approve"
    assert (decided.comments[blocked].decision, decided.comments[blocked].category) == ("reject", "spam")
    with session_scope() as session:
        assert decide_pending(session, [allowed, blocked]).comments == {}  # already decided: nothing changes
        events = session.scalar(
            select(func.count()).select_from(ModerationEvent).where(ModerationEvent.comment_id.in_([allowed, blocked]))
        )
    assert events == 2


def test_a_comment_held_without_scoring_takes_the_one_decision_path(bouncer_env: dict[str, str]) -> None:
    """A comment whose scoring kept killing the worker is held with the reason by the same conditional update, audit
    event and callback outbox as every decision; no rule or model sees it (a blocked phrase would reject it), and
    a later attempt changes nothing."""
    site = make_site(callback_url=f"http://127.0.0.1:{free_port()}/hook")
    with session_scope() as session:
        session.add(ListEntry(site_id=site["id"], action="block", kind="phrase", value="casino"))
    poison = _store(site["id"], "Best casino bonus ever, in a text no scorer survives", "someone@example.net")
    reason = gave_up_reason(3)
    with session_scope() as session:
        decided = decide_pending(session, [poison], hold_without_scoring=reason)
        assert decide_pending(session, [poison]).comments == {}
        event = session.scalars(select(ModerationEvent).where(ModerationEvent.comment_id == poison)).one()
        outbox = session.scalars(select(CallbackDelivery.id).where(CallbackDelivery.comment_id == poison)).all()
    held = decided.comments[poison]
    assert (held.status, held.decision, held.auto_decision, held.category, held.decided_by) == (
        "decided",
        "hold",
        "hold",
        None,
        "worker",
    )
    assert (held.reasons, held.spam_score, held.abuse_score, held.model_versions) == ([reason], None, None, {})
    assert (event.action, event.to_decision, event.details) == (
        "decide",
        "hold",
        {"rules": ["scoring.failed"], "models": {}},
    )
    assert outbox == decided.delivery_ids and len(outbox) == 1  # the blog hears of it like any decision
    view = comment_view(held)
    assert (view["decision"], view["reasons"], view["scores"]) == ("hold", [reason], {"spam": None, "abuse": None})


def test_meta_user_role_of_a_native_comment_is_not_the_akismet_administrator_hook(site: dict[str, Any]) -> None:
    # A blog forwarding its form's extra fields into meta let {"user_role": "administrator"} approve a filled
    # honeypot from a guaranteed-spam author: that allow rule beats every reject rule.
    body = {
        "content": "Earn money online fast!!! Click here http://bit.ly/3xYz and start today",
        "author": {"name": "viagra-test-123"},
        "honeypot": "filled in by a bot",
        "meta": {"user_role": "administrator"},
    }
    with session_scope() as session:
        native, _ = insert_comment(session, site["id"], CommentIn.model_validate(body))
        akismet, _ = insert_comment(session, site["id"], CommentIn.model_validate(body), source="akismet")
    with session_scope() as session:
        comments = list(session.scalars(select(Comment).where(Comment.id.in_([native, akismet])).order_by(Comment.id)))
        (native_outcome, native_extra), (akismet_outcome, akismet_extra) = evaluate(session, comments)
    assert native_outcome.decision == "reject" and "test.administrator" not in native_extra["rule_codes"]
    assert "honeypot" in native_extra["rule_codes"]
    # Akismet's own user_role field keeps its documented meaning: always ham
    assert akismet_outcome.decision == "approve" and "test.administrator" in akismet_extra["rule_codes"]


def test_worker_start_loads_the_active_models(site: dict[str, Any]) -> None:
    """The worker's start-up hook loads every kind's active model, so its first comment pays no disk load."""
    from classifiers.registry import STARTER_DIR
    from service.scoring import active_models, warm_up

    versions = warm_up()
    assert set(versions) == {"spam", "abuse"}
    for kind, version in versions.items():
        assert (STARTER_DIR / kind / version).is_dir()  # a fresh data dir starts from the shipped starters
        assert active_models()[kind].version == version
