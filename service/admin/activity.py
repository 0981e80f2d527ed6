"""The admin's activity page: the whole moderation audit log (``ModerationEvent``), newest first, filtered by
actor, site, action, new status and dates, a page at a time, and the filtered log as CSV.

A page is a walk of one index (``ix_moderation_events_*_created_id``) that stops after the page: the order is time
then id, both descending, and the cursors are event ids (the page after / before that event in this order), so a
page stays put while events are added above it. No totals are counted: a count is a scan of every matching row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Response, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.orm import Session

from service.admin import bp
from service.auth.session import admin_required
from service.db import session_scope
from service.models import Comment, ModerationEvent, Site, User, parse_id
from service.moderation.queries import PEOPLE_PREFIXES, actor_names, parse_date

PAGE_SIZE = 50
CSV_MAX_ROWS = 10_000
EXCERPT_CHARS = 140
# What ModerationEvent.action holds (service.human_decisions, moderation.actions, decisions.engine, history_import).
ACTIONS = ("decide", "approve", "reject", "undo", "feedback", "import")
STATUSES = ("approve", "hold", "reject")
# Actors that are no person: the scorer (worker, or the web fallback of Akismet's comment-check).
MACHINE_ACTORS = ("model", "web")
# The actor filter's fixed choices (besides one user): value -> label.
ACTOR_GROUPS = {
    "people": "People (moderators and admins)",
    "machine": "Machine (the model)",
    "blog": "The blog's feedback API",
    "akismet": "Akismet reports",
    "import": "History imports",
}
# A spreadsheet runs a cell that starts so as a formula (CSV injection): such cells get a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ActivityFilters:
    """The filters of the activity log, parsed leniently from the query string (bad values are ignored)."""

    actor: str = ""  # "", a key of ACTOR_GROUPS, or a user id (digits)
    site_id: int | None = None
    action: str | None = None
    status: str | None = None
    since: date | None = None
    until: date | None = None
    # Keyset cursors (an event id): the page right after (older) / before (newer) that event.
    before: int | None = None
    after: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ActivityFilters:
        actor = (args.get("actor") or "").strip()
        if actor not in ACTOR_GROUPS:
            user_id = parse_id(actor)
            actor = str(user_id) if user_id is not None else ""
        action, status = args.get("action") or None, args.get("status") or None
        return cls(
            actor=actor,
            site_id=parse_id(args.get("site")),
            action=action if action in ACTIONS else None,
            status=status if status in STATUSES else None,
            since=parse_date(args.get("since")),
            until=parse_date(args.get("until")),
            before=parse_id(args.get("before")),
            after=parse_id(args.get("after")),
        )

    @property
    def user_id(self) -> int | None:
        return parse_id(self.actor)

    def query_args(self, **changes: Any) -> dict[str, Any]:
        """The query string of these filters (with changes), without empty values: for links and the CSV."""
        f = replace(self, **changes)
        raw = {
            "actor": f.actor,
            "site": f.site_id,
            "action": f.action,
            "status": f.status,
            "since": f.since.isoformat() if f.since else None,
            "until": f.until.isoformat() if f.until else None,
            "before": f.before,
            "after": f.after,
        }
        return {k: v for k, v in raw.items() if v not in (None, "")}


def _filtered(stmt: Select[Any], f: ActivityFilters) -> Select[Any]:
    if f.actor == "people":
        stmt = stmt.where(or_(*(ModerationEvent.actor.startswith(p, autoescape=True) for p in PEOPLE_PREFIXES)))
    elif f.actor == "machine":
        # Matched on ``actor || ''``, which no index has: the machine's events are most of the log, so the walk in
        # time order with this as its filter finds a page at once; on the actor index the IN list is no longer in
        # time order, and every machine event would be read and sorted for one page.
        stmt = stmt.where((ModerationEvent.actor + "").in_(MACHINE_ACTORS))
    elif f.actor in ACTOR_GROUPS:
        stmt = stmt.where(ModerationEvent.actor == f.actor)
    elif f.user_id is not None:
        stmt = stmt.where(ModerationEvent.actor == f"user:{f.user_id}")
    if f.site_id is not None:
        stmt = stmt.where(ModerationEvent.site_id == f.site_id)
    if f.action:
        stmt = stmt.where(ModerationEvent.action == f.action)
    if f.status:
        stmt = stmt.where(ModerationEvent.to_decision == f.status)
    if f.since:
        stmt = stmt.where(ModerationEvent.created_at >= datetime.combine(f.since, time.min, UTC))
    if f.until:
        stmt = stmt.where(ModerationEvent.created_at < datetime.combine(f.until + timedelta(days=1), time.min, UTC))
    return stmt


@dataclass(frozen=True)
class Row:
    """One event as the page and the CSV show it."""

    id: int
    created_at: datetime
    actor: str  # as stored
    actor_name: str  # in words
    site_id: int
    site_name: str
    comment_id: int
    excerpt: str
    content_length: int
    action: str
    from_decision: str | None
    to_decision: str | None
    category: str | None
    note: str


@dataclass
class ActivityPage:
    filters: ActivityFilters
    rows: list[Row]
    has_newer: bool
    has_older: bool
    cursor_gone: bool = False  # the page's cursor event no longer exists (retention purge): the newest page instead


def _order_key() -> ColumnElement[Any]:
    return tuple_(ModerationEvent.created_at, ModerationEvent.id)


def _select() -> Select[Any]:
    # The excerpt is cut in SQL: a page must not read every long comment whole.
    return select(
        ModerationEvent,
        func.substr(Comment.content, 1, EXCERPT_CHARS + 1),
        func.length(Comment.content),
    ).join(Comment, Comment.id == ModerationEvent.comment_id)


def note_of(event: ModerationEvent) -> str:
    """What the event records besides who and what, in words: the rules of an automatic decision, the event an undo
    reverses, who ran an import."""
    details = event.details if isinstance(event.details, dict) else {}
    parts = []
    if event.action == "undo" and details.get("undoes") is not None:
        parts.append(f"undoes event #{details['undoes']}")
    rules = details.get("rules")
    if isinstance(rules, list) and rules:
        parts.append("rules: " + ", ".join(str(r) for r in rules))
    if details.get("by"):
        parts.append(f"by {details['by']}")
    for key in ("note", "reason"):  # not written today; shown if a future writer records one
        if details.get(key):
            parts.append(str(details[key]))
    return "; ".join(parts)


def _rows(session: Session, found: Sequence[Any], site_names: Mapping[int, str]) -> list[Row]:
    names = actor_names(session, {e.actor for e, _, _ in found})
    return [
        Row(
            id=e.id,
            created_at=e.created_at,
            actor=e.actor,
            actor_name=names.get(e.actor, e.actor),
            site_id=e.site_id,
            site_name=site_names.get(e.site_id, f"site #{e.site_id}"),
            comment_id=e.comment_id,
            excerpt=excerpt or "",
            content_length=length or 0,
            action=e.action,
            from_decision=e.from_decision,
            to_decision=e.to_decision,
            category=e.category,
            note=note_of(e),
        )
        for e, excerpt, length in found
    ]


def site_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Site.id, Site.name)).tuples().all())


def activity_page(session: Session, f: ActivityFilters, names: Mapping[int, str]) -> ActivityPage:
    """One page of the log under the filters, newest first."""
    stmt = _filtered(_select(), f)
    newest_first = (ModerationEvent.created_at.desc(), ModerationEvent.id.desc())
    cursor = f.before if f.before is not None else f.after
    anchor = None
    if cursor is not None:
        anchor = session.execute(
            select(ModerationEvent.created_at, ModerationEvent.id).where(ModerationEvent.id == cursor)
        ).first()
    if anchor is not None and f.before is not None:  # older than the anchor
        older = stmt.where(_order_key() < tuple_(*anchor)).order_by(*newest_first).limit(PAGE_SIZE + 1)
        found = list(session.execute(older))
        rows = _rows(session, found[:PAGE_SIZE], names)
        return ActivityPage(replace(f, after=None), rows, True, len(found) > PAGE_SIZE)
    if anchor is not None:  # newer than the anchor: read upwards, show newest first
        oldest_first = (ModerationEvent.created_at.asc(), ModerationEvent.id.asc())
        newer = stmt.where(_order_key() > tuple_(*anchor)).order_by(*oldest_first).limit(PAGE_SIZE + 1)
        found = list(session.execute(newer))
        if len(found) > PAGE_SIZE:
            rows = _rows(session, found[:PAGE_SIZE][::-1], names)
            return ActivityPage(replace(f, before=None), rows, True, True)
        # Less than a page above it: the newest page (whose length stays PAGE_SIZE, unlike a short page at the top).
    found = list(session.execute(stmt.order_by(*newest_first).limit(PAGE_SIZE + 1)))
    return ActivityPage(
        replace(f, before=None, after=None),
        _rows(session, found[:PAGE_SIZE], names),
        False,
        len(found) > PAGE_SIZE,
        cursor_gone=cursor is not None and anchor is None,
    )


def activity_csv_rows(session: Session, f: ActivityFilters, names: Mapping[int, str]) -> list[Row]:
    """The newest ``CSV_MAX_ROWS`` events under the filters (cursors ignored), read a page of 1000 at a time."""
    stmt = _filtered(_select(), replace(f, before=None, after=None))
    newest_first = (ModerationEvent.created_at.desc(), ModerationEvent.id.desc())
    rows: list[Row] = []
    while len(rows) < CSV_MAX_ROWS:
        chunk = stmt
        if rows:
            chunk = chunk.where(_order_key() < tuple_(rows[-1].created_at, rows[-1].id))
        found = list(session.execute(chunk.order_by(*newest_first).limit(min(1000, CSV_MAX_ROWS - len(rows)))))
        if not found:
            break
        rows.extend(_rows(session, found, names))
    return rows


def csv_cell(value: object) -> str:
    """A cell as written to the CSV; text a spreadsheet would run as a formula is made plain text with a ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


CSV_HEADER = (
    "event_id",
    "time_utc",
    "actor",
    "actor_id",
    "site_id",
    "site",
    "comment_id",
    "comment_excerpt",
    "action",
    "from",
    "to",
    "category",
    "note",
)


def to_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for r in rows:
        when = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
        cells = (
            r.id,
            when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            r.actor_name,
            r.actor,
            r.site_id,
            r.site_name,
            r.comment_id,
            r.excerpt[:EXCERPT_CHARS],
            r.action,
            r.from_decision,
            r.to_decision,
            r.category,
            r.note,
        )
        writer.writerow([csv_cell(c) for c in cells])
    return out.getvalue()


def _users(session: Session) -> list[tuple[int, str]]:
    return [(uid, email) for uid, email in session.execute(select(User.id, User.email).order_by(User.email))]


@bp.route("/activity")
@admin_required
def activity() -> ResponseReturnValue:
    """The moderation audit log of every site: who did what, when, to which comment."""
    f = ActivityFilters.from_args(request.args)
    with session_scope() as db:
        names = site_names(db)
        page = activity_page(db, f, names)
        sites = sorted(names.items(), key=lambda item: (item[1], item[0]))
        return render_template(
            "admin/activity.html",
            page=page,
            f=page.filters,
            sites=sites,
            users=_users(db),
            actor_groups=ACTOR_GROUPS,
            actions=ACTIONS,
            statuses=STATUSES,
            csv_max=CSV_MAX_ROWS,
            excerpt_chars=EXCERPT_CHARS,
            title="Activity",
        )


@bp.route("/activity.csv")
@admin_required
def activity_csv() -> ResponseReturnValue:
    """The filtered log as CSV, the newest ``CSV_MAX_ROWS`` events."""
    f = ActivityFilters.from_args(request.args)
    with session_scope() as db:
        body = to_csv(activity_csv_rows(db, f, site_names(db)))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Response(
        body,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="bouncer-activity-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )
