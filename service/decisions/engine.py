"""Decide pending comments: rules and stream checks, model scores, policy, then a conditional update.

The worker and the web fallback both call ``decide_pending``; whoever commits first wins and the other changes
nothing (``UPDATE ... WHERE status = 'pending'``), so a redelivered task or a race is harmless.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

import service.decisions.stream as stream
from service.decisions.hits import RuleHit
from service.decisions.policy import KindThresholds, ModelVerdict, Outcome, decide
from service.decisions.rules import ListMatcher, RuleInput, run_rules
from service.models import (
    CallbackDelivery,
    Comment,
    CommentStatus,
    ListEntry,
    ModerationEvent,
    Site,
    author_email_in,
    email_key,
)
from service.scoring import score_comments
from service.views import comment_view

log = logging.getLogger(__name__)


def _site_thresholds(site: Site, kind: str, model_default: KindThresholds) -> KindThresholds:
    approve = getattr(site, f"{kind}_approve_below")
    reject = getattr(site, f"{kind}_reject_at")
    return KindThresholds(
        approve_below=model_default.approve_below if approve is None else approve,
        reject_at=model_default.reject_at if reject is None else reject,
    )


def _list_entries(session: Session, site_ids: set[int]) -> dict[int, list[ListMatcher]]:
    entries: dict[int, list[ListMatcher]] = defaultdict(list)
    rows = session.execute(
        select(ListEntry.site_id, ListEntry.action, ListEntry.kind, ListEntry.value).where(
            ListEntry.site_id.in_(site_ids)
        )
    )
    for site_id, action, kind, value in rows:
        entries[site_id].append(ListMatcher(action, kind, value))
    return entries


def _trusted_authors(session: Session, comments: Sequence[Comment]) -> set[tuple[int, str]]:
    """(site, e-mail) pairs whose author already has an approved comment on the site."""
    wanted: dict[int, set[str]] = defaultdict(set)
    for c in comments:
        if c.author_email:
            wanted[c.site_id].add(c.author_email)
    trusted: set[tuple[int, str]] = set()
    for site_id, emails in wanted.items():
        rows = session.execute(
            select(Comment.author_email)
            .where(Comment.site_id == site_id, author_email_in(emails), Comment.decision == "approve")
            .distinct()
        )
        trusted.update((site_id, email_key(e)) for (e,) in rows)
    return trusted


def evaluate(session: Session, comments: Sequence[Comment]) -> list[tuple[Outcome, dict[str, Any]]]:
    """The decision of each comment (nothing written): rules, stream checks, model scores, policy."""
    if not comments:
        return []
    entries = _list_entries(session, {c.site_id for c in comments})
    trusted = _trusted_authors(session, comments)
    stream_results = stream.check_stream(comments)
    models, scores = score_comments(comments)
    results = []
    for i, c in enumerate(comments):
        site = c.site
        meta = c.meta if isinstance(c.meta, dict) else {}
        hits: list[RuleHit] = run_rules(
            RuleInput(
                content=c.content,
                author_name=c.author_name,
                author_email=c.author_email,
                author_url=c.author_url,
                author_ip=c.author_ip,
                honeypot=c.honeypot,
                # Akismet's user_role field (its "administrator" test hook); the native API's meta is free-form data
                # kept with the comment, not an instruction, so a meta.user_role sent there means nothing.
                user_role=str(meta.get("user_role", "")) if c.source == "akismet" else "",
            ),
            entries.get(c.site_id, []),
            max_links=site.max_links,
            trusted_author=(c.site_id, email_key(c.author_email)) in trusted,
            leniency=site.trusted_author_leniency,
        )
        sr = stream_results[i]
        hits.extend(sr.hits)
        if sr.skipped:
            hits.append(RuleHit("stream.skipped", "note", sr.skipped))
        verdicts = []
        for kind, model in models.items():
            s = scores[kind][i]
            default = KindThresholds(model.thresholds.approve_below, model.thresholds.reject_at)
            verdicts.append(
                ModelVerdict(kind, s.probability, list(s.reasons), _site_thresholds(site, kind, default), model.version)
            )
        outcome = decide(hits, verdicts, leniency=site.trusted_author_leniency)
        extra = {
            "spam_score": scores["spam"][i].probability,
            "abuse_score": scores["abuse"][i].probability,
            "categories": dict(scores["abuse"][i].categories),
            "model_versions": {kind: m.version for kind, m in models.items()},
            "campaign_key": sr.campaign_key,
            "rule_codes": [h.code for h in hits],
        }
        results.append((outcome, extra))
    return results


def held_without_scoring(comments: Sequence[Comment], reason: str) -> list[tuple[Outcome, dict[str, Any]]]:
    """Hold each comment for a moderator without evaluating it: no rule, stream check or model sees it again.

    For a comment whose scoring keeps failing (``service.decisions.attempts``): whichever part crashes on it, none
    of them runs. The policy still turns the hold into the outcome, so the reason reads like any other.
    """
    results = []
    for _ in comments:
        hit = RuleHit("scoring.failed", "hold", reason)
        extra: dict[str, Any] = {
            "spam_score": None,
            "abuse_score": None,
            "categories": {},
            "model_versions": {},
            "campaign_key": None,
            "rule_codes": [hit.code],
        }
        results.append((decide([hit], []), extra))
    return results


@dataclass(frozen=True)
class Decided:
    """What one ``decide_pending`` call decided: the comments, and the callback outbox rows it wrote."""

    comments: dict[int, Comment] = field(default_factory=dict)
    delivery_ids: list[int] = field(default_factory=list)


_COMMENTS = cast(Table, Comment.__table__)
_DECISION_FIELDS = (
    "decision",
    "auto_decision",
    "category",
    "reasons",
    "spam_score",
    "abuse_score",
    "categories",
    "model_versions",
    "campaign_key",
)
# Built once: executemany of a cached statement is the cheapest way to write a batch, and it keeps the SQLite
# write lock short (web requests insert comments meanwhile).
_SET_DECISION = (
    update(_COMMENTS)
    .where(_COMMENTS.c.id == bindparam("b_id"))
    .values({name: bindparam(name) for name in _DECISION_FIELDS})
)
_INSERT_EVENT = insert(cast(Table, ModerationEvent.__table__))


def decide_pending(
    session: Session, comment_ids: Sequence[int], decided_by: str = "worker", *, hold_without_scoring: str = ""
) -> Decided:
    """Decide those of ``comment_ids`` still pending and commit; returns the comments this call decided.

    Everything is computed first; then one conditional UPDATE ... RETURNING claims the batch (whoever commits first
    wins; a redelivered task or the web fallback changes nothing), and the values, audit events and callback outbox
    rows of the claimed comments are written in bulk. Side effects after the commit (notifications, callbacks,
    stream memory) are the caller's: see ``after_decided``. With ``hold_without_scoring`` (a reason) the comments
    are not evaluated but held for a moderator with that reason (see ``held_without_scoring``).
    """
    comments = list(
        session.scalars(
            select(Comment)
            .where(Comment.id.in_(comment_ids), Comment.status == CommentStatus.PENDING)
            .order_by(Comment.id)
        )
    )
    if not comments:
        return Decided()
    now = datetime.now(UTC)
    actor = "model" if decided_by == "worker" else decided_by
    planned = []
    if hold_without_scoring:
        results = held_without_scoring(comments, hold_without_scoring)
    else:
        results = evaluate(session, comments)
    for c, (outcome, extra) in zip(comments, results, strict=True):
        values = {
            "decision": outcome.decision,
            "auto_decision": outcome.decision,
            "category": outcome.category,
            "reasons": outcome.reasons,
            **{name: extra[name] for name in _DECISION_FIELDS[4:]},
        }
        event = {
            "comment_id": c.id,
            "site_id": c.site_id,
            "actor": actor,
            "action": "decide",
            "from_decision": None,
            "to_decision": outcome.decision,
            "category": outcome.category,
            "details": {"rules": extra["rule_codes"], "models": extra["model_versions"]},
            "created_at": now,
        }
        planned.append((c, values, event))

    claimed = set(
        session.scalars(
            update(Comment)
            .where(Comment.id.in_([c.id for c in comments]), Comment.status == CommentStatus.PENDING)
            .values(status=CommentStatus.DECIDED, decided_by=decided_by, decided_at=now)
            .returning(Comment.id)
            .execution_options(synchronize_session=False)
        )
    )
    won = [(c, values, event) for c, values, event in planned if c.id in claimed]  # the rest: someone else won
    if not won:
        session.rollback()
        return Decided()
    session.execute(_SET_DECISION, [{"b_id": c.id, **values} for c, values, _ in won])
    session.execute(_INSERT_EVENT, [event for _, _, event in won])
    deliveries = [
        {"comment_id": c.id, "site_id": c.site_id, "event_id": None, "created_at": now}
        for c, _, _ in won
        if c.site.sends_callbacks
    ]
    delivery_ids = []
    if deliveries:
        delivery_ids = list(session.scalars(insert(CallbackDelivery).returning(CallbackDelivery.id), deliveries))
    session.commit()
    for c, values, _ in won:
        values.update(status=CommentStatus.DECIDED, decided_by=decided_by, decided_at=now)
        for key, value in values.items():
            set_committed_value(c, key, value)  # what the bulk UPDATE wrote, without marking the object dirty
    return Decided({c.id: c for c, _, _ in won}, delivery_ids)


def after_decided(decided: Decided) -> None:
    """After the commit: wake waiting requests, remember outcomes in the stream, queue callbacks."""
    if not decided.comments:
        return
    from service import queue, redis_bus

    try:
        redis_bus.notify_decided({cid: comment_view(c) for cid, c in decided.comments.items()})
    except Exception:  # a lost wake-up only makes the request answer 202; the decision is stored
        log.warning("could not notify waiting requests", exc_info=True)
    stream.record_decisions(list(decided.comments.values()))
    if decided.delivery_ids:
        queue.enqueue_callbacks(decided.delivery_ids)
