"""Moderator actions: approve / reject as spam / reject as abuse, one or many, and undo of the last action.

Each action goes through ``human_decisions.apply_label`` with the decision the moderator saw, so of two moderators
acting on the same comment exactly one wins. After the commit: callbacks to the blog are enqueued and rejected
campaigns are taught to the stream checks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.auth.session import CurrentUser
from service.db import session_scope
from service.human_decisions import apply_label
from service.models import CallbackDelivery, Comment, Label, ModerationEvent

log = logging.getLogger(__name__)

# What a moderator clicks → the training label it means.
ACTION_LABELS = {"approve": "ham", "spam": "spam", "abuse": "abuse"}
ACTION_NAMES = {"approve": "approved", "spam": "rejected as spam", "abuse": "rejected as abuse"}
SEEN_DECISIONS = ("approve", "hold", "reject")
UNDO_SECONDS = 10


class Forbidden(Exception):
    """The user may not act on this comment (another site's)."""


@dataclass(frozen=True)
class ActionResult:
    comment_id: int
    applied: bool
    message: str
    decision: str | None
    category: str | None
    event_id: int | None = None
    unchanged: bool = False  # the comment already was as asked: nothing written, nothing sent (not a conflict)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _after_commit(
    comments: Sequence[Comment], delivery_ids: Sequence[int], undone_rejections: Sequence[Comment] = ()
) -> None:
    """Work that must only happen once the decisions are stored: callbacks and stream learning."""
    from service.queue import enqueue_callbacks

    if delivery_ids:
        enqueue_callbacks(list(delivery_ids))
    if comments or undone_rejections:
        try:
            from service.decisions.stream import record_decisions

            record_decisions(list(comments), cleared=list(undone_rejections))
        except Exception:  # the stream checks are an optimisation; the decision is stored either way
            log.warning("could not record decisions in the stream checks", exc_info=True)


def moderate(user: CurrentUser, items: Sequence[tuple[int, str]], action: str) -> list[ActionResult]:
    """Apply one action to comments, each given as (id, decision the moderator saw). All-or-nothing on access:
    a comment of a site the user may not see raises ``Forbidden`` before anything changes."""
    label = ACTION_LABELS[action]
    # Row locks in one order, the comments' ids: two bulk actions on the same comments (each list in its own order)
    # otherwise each lock a row the other waits for, and PostgreSQL aborts one as a deadlock. Answers keep the order.
    order = {cid: n for n, (cid, _) in enumerate(items)}
    items = sorted(items, key=lambda item: item[0])
    results: list[ActionResult] = []
    changed: list[Comment] = []
    deliveries: list[int] = []
    with session_scope() as session:
        ids = [cid for cid, _ in items]
        comments = {c.id: c for c in session.scalars(select(Comment).where(Comment.id.in_(ids)))}
        for cid in ids:
            c = comments.get(cid)
            if c is not None and not user.may_see_site(c.site_id):
                raise Forbidden(cid)
        for cid, seen in items:
            c = comments.get(cid)
            if c is None:
                results.append(ActionResult(cid, False, "this comment no longer exists", None, None))
                continue
            if seen not in SEEN_DECISIONS or c.status != "decided":
                results.append(ActionResult(cid, False, "this comment is not decided yet", c.decision, c.category))
                continue
            prior_category = c.category
            outcome = apply_label(
                session,
                c,
                label,
                source="moderator",
                actor=user.actor,
                expected_from=seen,
                only_if_changed=True,  # re-approving an approved comment is no decision: no event, label or callback
            )
            if outcome.applied and outcome.event_id is not None:
                event = session.get(ModerationEvent, outcome.event_id)
                if event is not None:  # what undo needs to restore the comment exactly
                    event.details = {**event.details, "from_category": prior_category, "via": "moderation"}
                changed.append(c)
                if outcome.delivery_id is not None:
                    deliveries.append(outcome.delivery_id)
                message = ACTION_NAMES[action]
            elif outcome.gone:  # the retention purge deleted it since it was read above
                results.append(ActionResult(cid, False, "this comment no longer exists", None, None))
                continue
            elif outcome.unchanged:
                message = f"already {ACTION_NAMES[action]}"
            else:
                message = outcome.message
            results.append(
                ActionResult(cid, outcome.applied, message, c.decision, c.category, outcome.event_id, outcome.unchanged)
            )
    _after_commit(changed, deliveries)
    return sorted(results, key=lambda r: order[r.comment_id])


def undo(user: CurrentUser, event_ids: Sequence[int], now: datetime | None = None) -> list[ActionResult]:
    """Put comments back as they were before this user's own recent actions (within ``UNDO_SECONDS``).

    A comment someone changed since then is left alone. The blog gets a callback with the restored decision; the
    undone label is superseded and the label that was current before it is current again.
    """
    now = now or datetime.now(UTC)
    results: list[ActionResult] = []
    deliveries: list[int] = []
    restored: list[Comment] = []
    undone_rejections: list[Comment] = []
    with session_scope() as session:
        for event_id in sorted(event_ids):  # a bulk action's events are in comment-id order: locks as in moderate()
            event = session.get(ModerationEvent, event_id)
            if event is None or event.actor != user.actor:
                raise Forbidden(event_id)
            comment = session.get(Comment, event.comment_id)
            if comment is None:
                continue
            if not user.may_see_site(comment.site_id):
                raise Forbidden(event_id)
            if now - _aware(event.created_at) > timedelta(seconds=UNDO_SECONDS):
                results.append(ActionResult(comment.id, False, "too late to undo", comment.decision, comment.category))
                continue
            result = _revert(session, comment, event, user)
            results.append(result)
            if result.applied:
                restored.append(comment)
                if event.to_decision == "reject" and comment.decision != "reject":
                    undone_rejections.append(comment)
                delivery = _delivery(session, comment, result.event_id)
                if delivery is not None:
                    deliveries.append(delivery)
    _after_commit(restored, deliveries, undone_rejections)
    return results


def _revert(session: Session, comment: Comment, event: ModerationEvent, user: CurrentUser) -> ActionResult:
    later = session.scalar(
        select(ModerationEvent.id)
        .where(ModerationEvent.comment_id == comment.id, ModerationEvent.id > event.id)
        .limit(1)
    )
    from_category = event.details.get("from_category") if isinstance(event.details, dict) else None
    category_now = Comment.category.is_(None) if event.category is None else Comment.category == event.category
    changed = 0
    if later is None and event.from_decision in SEEN_DECISIONS:
        changed = session.execute(
            update(Comment)
            # Still as the undone action left it, decided_by included: a change committed after the check for later
            # events above (the blog's feedback of the same label only changes decided_by) is then not undone too.
            .where(
                Comment.id == comment.id,
                Comment.decision == event.to_decision,
                category_now,
                Comment.decided_by == event.actor,
            )
            .values(
                decision=event.from_decision,
                category=from_category,
                decided_by=user.actor,  # as every other action of this user (apply_label)
                moderated_at=datetime.now(UTC),
            )
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]  # CursorResult has rowcount
    if changed != 1:
        session.refresh(comment)
        return ActionResult(comment.id, False, "changed since; not undone", comment.decision, comment.category)
    undo_event = ModerationEvent(
        comment_id=comment.id,
        site_id=comment.site_id,
        actor=user.actor,
        action="undo",
        from_decision=event.to_decision,
        to_decision=event.from_decision,
        category=from_category,
        details={"undoes": event.id},
    )
    session.add(undo_event)
    # The undone label goes; the label that was current before it (if any) is current again.
    undone = session.scalars(
        select(Label)
        .where(Label.comment_id == comment.id, Label.superseded.is_(False), Label.actor == event.actor)
        .order_by(Label.id.desc())
        .limit(1)
    ).first()
    if undone is not None:
        undone.superseded = True
        previous = session.scalars(
            select(Label).where(Label.comment_id == comment.id, Label.id < undone.id).order_by(Label.id.desc()).limit(1)
        ).first()
        if previous is not None:
            previous.superseded = False
    session.flush()
    session.refresh(comment)
    return ActionResult(comment.id, True, "undone", comment.decision, comment.category, undo_event.id)


def _delivery(session: Session, comment: Comment, event_id: int | None) -> int | None:
    if not comment.site.sends_callbacks or event_id is None:
        return None
    delivery = CallbackDelivery(comment_id=comment.id, site_id=comment.site_id, event_id=event_id)
    session.add(delivery)
    session.flush()
    return delivery.id
