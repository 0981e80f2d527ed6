"""Human decisions on a comment (moderators, the blog's feedback, Akismet submit-spam/ham): one code path.

Each is a conditional update of the disposition, an audit event, a training label (never for test comments) and,
when the blog did not make the decision itself, a signed callback to the blog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from service.models import CallbackDelivery, Comment, CommentStatus, Label, ModerationEvent

LABEL_TO_DISPOSITION = {"ham": ("approve", None), "spam": ("reject", "spam"), "abuse": ("reject", "abuse")}


@dataclass(frozen=True)
class HumanDecision:
    applied: bool
    message: str
    event_id: int | None = None
    delivery_id: int | None = None
    unchanged: bool = False  # not applied because the comment already was so (not a conflict)
    gone: bool = False  # not applied because the comment was deleted meanwhile (the retention purge)


def record_label(
    session: Session, comment: Comment, label: str, source: str, actor: str, at: datetime | None = None
) -> Label | None:
    """Store a training label; it supersedes the comment's earlier labels. Test comments never become labels.

    ``at``: when the human decided, if not now (imported history: retraining weighs a label by its age).
    The same label from the same source again keeps the current row: a blog that repeats its feedback teaches
    nothing new, and a fresh row would count as new for the nightly retrain and move into the newest holdout."""
    if comment.is_test:
        return None
    current = session.scalars(
        select(Label).where(Label.comment_id == comment.id, Label.superseded.is_(False)).order_by(Label.id.desc())
    ).first()
    if current is not None and (current.label, current.source) == (label, source):
        return current
    session.execute(
        update(Label).where(Label.comment_id == comment.id, Label.superseded.is_(False)).values(superseded=True)
    )
    row = Label(comment_id=comment.id, site_id=comment.site_id, label=label, source=source, actor=actor)
    if at is not None:
        row.created_at = at
    session.add(row)
    return row


def apply_label(
    session: Session,
    comment: Comment,
    label: str,
    *,
    source: str,
    actor: str,
    expected_from: str | None = None,
    action: str | None = None,
    notify_blog: bool = True,
    only_if_changed: bool = False,
    once_per_actor: bool = False,
) -> HumanDecision:
    """Set the comment's disposition from a human label (spam | ham | abuse).

    With ``expected_from`` the update only happens when the comment's current decision is that one, so of two
    moderators acting on the same comment exactly one wins. With ``only_if_changed`` a label that leaves the
    decision and category as they are changes nothing (no event, label or callback) and answers ``unchanged``.
    With ``once_per_actor`` only a repeat of the actor's own decision does so (the comment is so and was decided by
    ``actor``): a blog that sends the same report twice, or twice at once, makes one event and one label, while its
    report on a comment the model already decided the same way is still recorded. The caller commits.
    """
    if label not in LABEL_TO_DISPOSITION:
        raise ValueError(f"unknown label {label!r}")
    to_decision, category = LABEL_TO_DISPOSITION[label]
    now = datetime.now(UTC)
    for _ in range(3):
        # The event says what this UPDATE changed: the decision is part of its condition, the one expected or else
        # the one read. One stored since it was read (the worker deciding a pending comment the blog labels at the
        # same moment) makes the UPDATE miss, and it goes again from the fresh row: the audit log says from what.
        from_decision = comment.decision if expected_from is None else expected_from
        conditions = [Comment.id == comment.id, Comment.decision.is_not_distinct_from(from_decision)]
        if only_if_changed or once_per_actor:
            changes = [Comment.decision.is_distinct_from(to_decision), Comment.category.is_distinct_from(category)]
            if not only_if_changed:
                changes.append(Comment.decided_by.is_distinct_from(actor))
            # Part of the UPDATE's condition, not a check before it: of two at once, the second sees the first's row.
            conditions.append(or_(*changes))
        result = session.execute(
            update(Comment)
            .where(*conditions)
            .values(
                status=CommentStatus.DECIDED,
                decision=to_decision,
                category=category,
                decided_by=actor,
                # A comment still pending (a label before the worker scored it) is decided now: no "decided" without
                # a time.
                decided_at=func.coalesce(Comment.decided_at, now),
                moderated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]  # CursorResult has rowcount
            break
        # The retention purge may have deleted it since the caller read it (an old automatic reject): say so, and
        # leave the caller's other work in this transaction alone (a refresh of a deleted row raises).
        if session.scalar(select(Comment.id).where(Comment.id == comment.id)) is None:
            return HumanDecision(False, "this comment no longer exists", gone=True)
        session.refresh(comment)
        if expected_from is None and comment.decision != from_decision:
            continue  # decided by someone else since it was read: the label still applies, from that decision
        as_seen = expected_from is None or comment.decision == expected_from
        already = (comment.decision, comment.category) == (to_decision, category)
        if only_if_changed and as_seen and already:
            return HumanDecision(False, "nothing to change: the comment already is so", unchanged=True)
        if once_per_actor and as_seen and already and comment.decided_by == actor:
            return HumanDecision(False, f"nothing to change: {actor} already decided so", unchanged=True)
        return HumanDecision(False, f"this comment was already changed to '{comment.decision}' by someone else")
    else:
        return HumanDecision(False, f"this comment was already changed to '{comment.decision}' by someone else")
    event = ModerationEvent(
        comment_id=comment.id,
        site_id=comment.site_id,
        actor=actor,
        action=action or ("approve" if to_decision == "approve" else "reject"),
        from_decision=from_decision,
        to_decision=to_decision,
        category=category,
        details={"label": label, "source": source},
    )
    session.add(event)
    record_label(session, comment, label, source, actor)
    session.flush()
    delivery_id = None
    if notify_blog and comment.site.sends_callbacks:
        delivery = CallbackDelivery(comment_id=comment.id, site_id=comment.site_id, event_id=event.id)
        session.add(delivery)
        session.flush()
        delivery_id = delivery.id
    session.refresh(comment)
    return HumanDecision(True, f"marked as {label}", event.id, delivery_id)
