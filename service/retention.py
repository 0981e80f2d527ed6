"""Data retention: delete automatic rejects and finished callback deliveries, erase commenters' personal data.

Each rule has its own age in days (``BOUNCER_RETAIN_*``; 0 keeps for ever):
- **rejected comments** that no human confirmed (decided by the worker or the web process, no current label) are
  deleted with their audit events and callback deliveries (``ON DELETE CASCADE``): they are the bulk and teach
  nothing. Pending and held comments, approved ones and every comment with a current human label stay. A count
  per site and day is kept (``deleted_reject_counts``) so that Akismet's get-stats still counts them.
- **personal data** of every decided comment: the author's IP, user agent and referrer are emptied and the e-mail
  becomes its erased form (``service.models.erased_email``), so the trusted-author rule and the author history
  still find the author; the text, decision, scores and labels stay, and with them the training data.
- **callback deliveries** that are finished (delivered or given up) are deleted.

Work goes in chunks, each its own short transaction (SQLite has one write lock, shared with the web's inserts), and
every statement repeats its conditions: two purges at once, or a moderator acting meanwhile, change a row at most
once and never one that stopped qualifying.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from service import redis_bus
from service.comments import lock_in_id_order
from service.config import settings
from service.db import session_scope
from service.models import (
    CallbackDelivery,
    Comment,
    CommentStatus,
    Decision,
    DeletedRejectCount,
    Label,
    Site,
    erased_email,
)

log = logging.getLogger(__name__)

KINDS = ("rejected_comments", "personal_data", "callback_deliveries")
# decided_by of the automatic path; a human decision writes moderator:<id>, blog, akismet or import there.
AUTOMATIC = ("worker", "web")
FINISHED = ("delivered", "failed")
CHUNK_SIZE = 500
# Between chunks the write lock is free for a moment: SQLite's waiting web inserts get their turn.
CHUNK_PAUSE_SECONDS = 0.02
# The hourly task stops after this many chunks of each kind (the rest waits an hour): a task never runs for long.
TASK_MAX_CHUNKS = 200


@dataclass
class PurgeResult:
    """What one purge removed (or, with ``dry_run``, would remove), by kind, and the cut-off dates it used."""

    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    before: dict[str, datetime | None] = field(default_factory=dict)
    complete: bool = True  # False when the task's chunk budget ran out with work left

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            **self.counts,
            "before": {k: (v.isoformat() if v else None) for k, v in self.before.items()},
            "complete": self.complete,
        }


def cutoffs(now: datetime | None = None) -> dict[str, datetime | None]:
    """For each kind, the age before which rows go; None when that kind is kept for ever (0 days)."""
    cfg = settings()
    now = now or datetime.now(UTC)
    days = {
        "rejected_comments": cfg.retain_rejected_days,
        "personal_data": cfg.retain_personal_data_days,
        "callback_deliveries": cfg.retain_callbacks_days,
    }
    return {kind: (now - timedelta(days=n) if n else None) for kind, n in days.items()}


def _automatic_reject(cutoff: datetime) -> list[ColumnElement[bool]]:
    # Aliases: inside a query over deliveries (the dry run's count) these must not correlate to the outer table.
    label, delivery = aliased(Label), aliased(CallbackDelivery)
    return [
        Comment.status == CommentStatus.DECIDED,
        Comment.decision == Decision.REJECT,
        Comment.decided_by.in_(AUTOMATIC),
        Comment.received_at < cutoff,
        # A current label is a human's word on it: training data. A superseded one (undone) is not.
        ~exists().where(label.comment_id == Comment.id, label.superseded.is_(False)),
        # A callback still on its way would find its comment gone: wait until it is delivered or given up.
        ~exists().where(delivery.comment_id == Comment.id, delivery.status == "pending"),
    ]


def _personal_data(cutoff: datetime) -> list[ColumnElement[bool]]:
    # Pending comments keep theirs: the scorer's rules (IP block list, velocity) must see what the blog sent.
    return [
        Comment.personal_data_erased_at.is_(None),
        Comment.received_at < cutoff,
        Comment.status == CommentStatus.DECIDED,
    ]


def _finished_delivery(cutoff: datetime) -> list[ColumnElement[bool]]:
    return [CallbackDelivery.status.in_(FINISHED), CallbackDelivery.created_at < cutoff]


def purge(
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    chunk_size: int = CHUNK_SIZE,
    max_chunks: int | None = None,
) -> PurgeResult:
    """Apply the retention rules once; ``dry_run`` only counts. Idempotent, and safe beside another purge.

    ``max_chunks`` bounds the chunks of each kind (the hourly task); the result says whether work was left.
    """
    before = cutoffs(now)
    result = PurgeResult(dry_run=dry_run, before=before)
    if dry_run:
        with session_scope() as session:
            result.counts = _count(session, before)
        return result
    # Rejects first: their deliveries go with them, and erasing data of a comment about to go is wasted work.
    steps = (
        ("rejected_comments", _delete_rejected_chunk),
        ("callback_deliveries", _delete_deliveries_chunk),
        ("personal_data", _erase_chunk),
    )
    for kind, step in steps:
        cutoff = before[kind]
        if cutoff is None:
            continue
        chunks = 0
        while True:
            if max_chunks is not None and chunks >= max_chunks:
                result.complete = False
                break
            done, found = step(cutoff, chunk_size)
            result.counts[kind] += done
            chunks += 1
            if found < chunk_size:
                break
            time.sleep(CHUNK_PAUSE_SECONDS)
    removed = {k: n for k, n in result.counts.items() if n}
    if removed:
        log.info("retention purge: %s%s", removed, "" if result.complete else " (more left for the next run)")
        _count_metric(removed)
    return result


def _delete_rejected_chunk(cutoff: datetime, chunk_size: int) -> tuple[int, int]:
    """Delete up to ``chunk_size`` old automatic rejects (one site after the other: the index is per site)."""
    where = _automatic_reject(cutoff)
    with session_scope() as session:
        ids: list[int] = []
        for site_id in session.scalars(select(Site.id).order_by(Site.id)):
            ids += session.scalars(
                select(Comment.id)
                .where(Comment.site_id == site_id, *where)
                .order_by(Comment.received_at, Comment.id)
                .limit(chunk_size - len(ids))
            )
            if len(ids) >= chunk_size:
                break
        if not ids:
            return 0, 0
        locked = lock_in_id_order(session, [Comment.id.in_(ids), *where], key_share=False)
        # ON DELETE CASCADE takes their events, superseded labels and finished deliveries (all by indexed keys).
        deleted = session.execute(
            delete(Comment)
            .where(Comment.id.in_(locked), *where)
            .returning(Comment.site_id, Comment.received_at, Comment.is_test, Comment.auto_decision)
            .execution_options(synchronize_session=False)
        ).all()
        # What Akismet's get-stats counted of them (not test comments, only answers comment-check gave).
        tally = Counter((site_id, _utc_day(at)) for site_id, at, is_test, auto in deleted if auto and not is_test)
        _add_to_deleted_counts(session, tally)
        return len(deleted), len(ids)


def _utc_day(at: datetime) -> str:
    # SQLite gives back naive datetimes, which Bouncer stores in UTC
    return (at.astimezone(UTC) if at.tzinfo else at).strftime("%Y-%m-%d")


def _add_to_deleted_counts(session: Session, tally: Counter[tuple[int, str]]) -> None:
    if not tally:
        return
    rows = [{"site_id": site_id, "day": day, "comments": n} for (site_id, day), n in sorted(tally.items())]
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    stmt = insert(DeletedRejectCount).values(rows)
    # Two purges at once may add to the same day: the database adds, neither overwrites the other.
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["site_id", "day"], set_={"comments": DeletedRejectCount.comments + stmt.excluded.comments}
        )
    )


def _delete_deliveries_chunk(cutoff: datetime, chunk_size: int) -> tuple[int, int]:
    where = _finished_delivery(cutoff)
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(CallbackDelivery.id)
                .where(*where)
                .order_by(CallbackDelivery.created_at, CallbackDelivery.id)
                .limit(chunk_size)
            )
        )
        if not ids:
            return 0, 0
        deleted = session.execute(
            delete(CallbackDelivery)
            .where(CallbackDelivery.id.in_(ids), *where)
            .execution_options(synchronize_session=False)
        )
        return int(deleted.rowcount), len(ids)  # type: ignore[attr-defined]  # CursorResult has rowcount


def _erase_chunk(cutoff: datetime, chunk_size: int) -> tuple[int, int]:
    where = _personal_data(cutoff)
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(Comment.id)
                .where(*where)
                .order_by(Comment.personal_data_erased_at, Comment.received_at, Comment.id)
                .limit(chunk_size)
            )
        )
        if not ids:
            return 0, 0
        locked = lock_in_id_order(session, [Comment.id.in_(ids), *where], key_share=True)
        # The UPDATE claims the rows (erased_at IS NULL): of two purges at once, each row goes to one of them.
        claimed = session.execute(
            update(Comment)
            .where(Comment.id.in_(locked), *where)
            .values(author_ip="", user_agent="", referrer="", personal_data_erased_at=datetime.now(UTC))
            .returning(Comment.id, Comment.author_email)
            .execution_options(synchronize_session=False)
        ).all()
        emails = [
            {"id": cid, "author_email": erased_email(email)}
            for cid, email in claimed
            if email.strip() and erased_email(email) != email
        ]
        if emails:  # an ORM bulk update by primary key: one executemany
            session.execute(update(Comment), emails)
        return len(claimed), len(ids)


def _count(session: Session, before: dict[str, datetime | None]) -> dict[str, int]:
    """What a purge would remove now, each row counted once (a reject's deliveries go with the reject)."""
    counts = dict.fromkeys(KINDS, 0)
    rejected = before["rejected_comments"]
    going = and_(*_automatic_reject(rejected)) if rejected else None
    if going is not None:
        counts["rejected_comments"] = session.scalar(select(func.count()).select_from(Comment).where(going)) or 0
    if before["callback_deliveries"]:
        finished = _finished_delivery(before["callback_deliveries"])
        stmt = select(func.count()).select_from(CallbackDelivery).where(*finished)
        if going is not None:
            stmt = stmt.where(~exists().where(Comment.id == CallbackDelivery.comment_id, going))
        counts["callback_deliveries"] = session.scalar(stmt) or 0
    if before["personal_data"]:
        stmt = select(func.count()).select_from(Comment).where(*_personal_data(before["personal_data"]))
        if going is not None:
            stmt = stmt.where(~going)
        counts["personal_data"] = session.scalar(stmt) or 0
    return counts


def _count_metric(removed: dict[str, int]) -> None:
    try:
        redis_bus.count_purged(removed)
    except Exception:  # the metric is bookkeeping: a Redis hiccup must not fail a purge that already committed
        log.warning("could not count purged rows in Redis", exc_info=True)
