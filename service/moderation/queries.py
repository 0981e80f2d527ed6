"""What the moderation pages read: filtered, paginated comment lists, status counts and author history.

Every query is scoped to the sites the user may see; a page costs a handful of indexed queries whatever the
size of the queue.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from service.auth.session import CurrentUser
from service.models import Comment, ModerationEvent, Site, User, author_email_in, email_key, parse_id

# Any SELECT statement: the scoping helpers keep the statement's own column types.
_Stmt = TypeVar("_Stmt", bound=Select)

PAGE_SIZE = 30
STATUSES = ("hold", "approve", "reject", "all")
SORTS = ("newest", "uncertain", "oldest")


def _float(raw: str | None, low: float = 0.0, high: float = 1.0) -> float | None:
    try:
        value = float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
    return None if value is None else min(high, max(low, value))


def parse_date(raw: str | None) -> date | None:
    """An ISO date from a query string; ``None`` when missing or no date."""
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class ListFilters:
    """The filters of a comment list, parsed leniently from the query string (bad values are ignored)."""

    status: str = "hold"
    site_id: int | None = None
    category: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    since: date | None = None
    until: date | None = None
    q: str = ""
    sort: str = "newest"
    page: int = 1
    # Keyset cursors (a comment id): the page right after / before that comment in the current order. Unlike a
    # page number they stay put while the moderator works: acting on page 1 in place and then going on to "the
    # next page" must not skip the comments that moved up into the decided ones' places.
    after: int | None = None
    before: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str], default_status: str) -> ListFilters:
        status = args.get("status", default_status)
        category = args.get("category") or None
        sort = args.get("sort", "newest")
        return cls(
            status=status if status in STATUSES else default_status,
            site_id=parse_id(args.get("site")),
            category=category if category in ("spam", "abuse") else None,
            score_min=_float(args.get("score_min")),
            score_max=_float(args.get("score_max")),
            since=parse_date(args.get("since")),
            until=parse_date(args.get("until")),
            q=(args.get("q") or "").strip()[:200],
            sort=sort if sort in SORTS else "newest",
            page=parse_id(args.get("page")) or 1,
            after=parse_id(args.get("after")),
            before=parse_id(args.get("before")),
        )

    def query_args(self, **changes: Any) -> dict[str, Any]:
        """The query string of these filters (with changes), without empty values: for links and pagination."""
        f = replace(self, **changes)
        raw = {
            "status": f.status,
            "site": f.site_id,
            "category": f.category,
            "score_min": f.score_min,
            "score_max": f.score_max,
            "since": f.since.isoformat() if f.since else None,
            "until": f.until.isoformat() if f.until else None,
            "q": f.q,
            "sort": f.sort if f.sort != "newest" else None,
            "page": f.page if f.page > 1 else None,
            "after": f.after,
            "before": f.before,
        }
        return {k: v for k, v in raw.items() if v not in (None, "")}


def top_score() -> ColumnElement[float]:
    """The higher of the two scores (portable: no GREATEST in SQLite, no two-argument MAX in PostgreSQL)."""
    spam = func.coalesce(Comment.spam_score, 0.0)
    abuse = func.coalesce(Comment.abuse_score, 0.0)
    return case((spam >= abuse, spam), else_=abuse)


def visible(stmt: _Stmt, user: CurrentUser) -> _Stmt:
    """Restrict a comment query to the user's sites (admins see every site)."""
    if user.is_admin:
        return stmt
    return stmt.where(Comment.site_id.in_(sorted(user.site_ids) or [-1]))


def _filtered(stmt: _Stmt, user: CurrentUser, f: ListFilters) -> _Stmt:
    stmt = visible(stmt, user)
    if f.site_id is not None:
        stmt = stmt.where(Comment.site_id == f.site_id)
    if f.category:
        stmt = stmt.where(Comment.category == f.category)
    score = {"spam": Comment.spam_score, "abuse": Comment.abuse_score}.get(f.category or "", top_score())
    if f.score_min is not None:
        stmt = stmt.where(score >= f.score_min)
    if f.score_max is not None:
        stmt = stmt.where(score <= f.score_max)
    if f.since:
        stmt = stmt.where(Comment.received_at >= datetime.combine(f.since, time.min, UTC))
    if f.until:
        stmt = stmt.where(Comment.received_at < datetime.combine(f.until + timedelta(days=1), time.min, UTC))
    if f.q:
        pattern = "%" + f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matches: list[ColumnElement[bool]] = [
            col.ilike(pattern, escape="\\")
            for col in (Comment.content, Comment.author_name, Comment.author_email, Comment.author_ip)
        ]
        if "@" in f.q:  # a whole address also finds the comments whose e-mail data retention erased
            matches.append(author_email_in([f.q]))
        stmt = stmt.where(or_(*matches))
    return stmt


def _status_clause(status: str) -> ColumnElement[bool] | None:
    return None if status == "all" else Comment.decision == status


@dataclass
class AuthorHistory:
    approved: int = 0
    rejected: int = 0


@dataclass
class CommentPage:
    filters: ListFilters
    comments: list[Comment]
    counts: dict[str, int]
    total: int
    pages: int
    history: dict[int, AuthorHistory] = field(default_factory=dict)
    campaign_sizes: dict[str, int] = field(default_factory=dict)
    number: int = 1  # which page this is (from the comments before it)
    has_prev: bool = False
    has_next: bool = False


def status_counts(session: Session, user: CurrentUser, f: ListFilters) -> dict[str, int]:
    """How many comments each status tab holds under the current filters (one grouped query)."""
    stmt = _filtered(select(Comment.decision, func.count()).select_from(Comment), user, f).group_by(Comment.decision)
    counts = {s: 0 for s in STATUSES}
    for decision, n in session.execute(stmt):
        if decision in counts:
            counts[decision] = n
        counts["all"] += n
    return counts


def _sort_keys(sort: str) -> list[tuple[Any, bool]]:
    """The order of a list as (expression, ascending) pairs; the id last makes it total, so cursors are exact."""
    if sort == "uncertain":
        # Closest to the middle of the score range first: where the model is least sure.
        return [(func.abs(top_score() - 0.5), True), (Comment.received_at, False), (Comment.id, False)]
    if sort == "oldest":
        return [(Comment.received_at, True), (Comment.id, True)]
    return [(Comment.received_at, False), (Comment.id, False)]


def _beyond(keys: Sequence[tuple[Any, bool]], anchor: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after the anchor's key values in this order (a lexicographic comparison, portable SQL)."""
    clauses = []
    for i, (expr, ascending) in enumerate(keys):
        earlier = [keys[j][0] == anchor[j] for j in range(i)]
        clauses.append(and_(*earlier, expr > anchor[i] if ascending else expr < anchor[i]))
    return or_(*clauses)


def list_comments(session: Session, user: CurrentUser, f: ListFilters) -> CommentPage:
    """One page of comments under the filters, with the counts, author history and campaign sizes it shows."""
    counts = status_counts(session, user, f)
    total = counts[f.status]
    pages = max(1, -(-total // PAGE_SIZE))
    stmt = _filtered(select(Comment), user, f)
    clause = _status_clause(f.status)
    if clause is not None:
        stmt = stmt.where(clause)
    keys = _sort_keys(f.sort)
    reverse = [(expr, not ascending) for expr, ascending in keys]
    forward = [expr.asc() if ascending else expr.desc() for expr, ascending in keys]
    backward = [expr.asc() if ascending else expr.desc() for expr, ascending in reverse]
    cursor = f.after if f.after is not None else f.before
    anchor = None
    if cursor is not None:
        # The anchor may have left the list since (decided): its position in the order still holds.
        anchor = session.execute(visible(select(*(e for e, _ in keys)).where(Comment.id == cursor), user)).first()
    comments: list[Comment] | None = None
    if anchor is not None and f.after is not None:
        comments = list(session.scalars(stmt.where(_beyond(keys, anchor)).order_by(*forward).limit(PAGE_SIZE)))
    elif anchor is not None:
        found = list(session.scalars(stmt.where(_beyond(reverse, anchor)).order_by(*backward).limit(PAGE_SIZE)))
        if len(found) == PAGE_SIZE:  # else there is less than a page before it: show the first page
            comments = found[::-1]
    if comments is not None:
        f = replace(f, page=1)
        position = 0
        if comments:
            first = session.execute(select(*(e for e, _ in keys)).where(Comment.id == comments[0].id)).one()
            before_first = stmt.where(_beyond(reverse, first)).subquery()
            position = session.scalar(select(func.count()).select_from(before_first)) or 0
    else:
        f = replace(f, page=min(f.page, pages), after=None, before=None)
        position = (f.page - 1) * PAGE_SIZE
        comments = list(session.scalars(stmt.order_by(*forward).limit(PAGE_SIZE).offset(position)))
    return CommentPage(
        filters=f,
        comments=comments,
        counts=counts,
        total=total,
        pages=pages,
        history=author_history(session, comments),
        campaign_sizes=campaign_sizes(session, user, comments),
        number=position // PAGE_SIZE + 1,
        has_prev=position > 0,
        has_next=position + len(comments) < total,
    )


def author_history(session: Session, comments: Sequence[Comment]) -> dict[int, AuthorHistory]:
    """For each comment: how many other comments of its author (same site, same e-mail) were approved or rejected."""
    wanted: dict[int, set[str]] = defaultdict(set)
    for c in comments:
        if c.author_email:
            wanted[c.site_id].add(c.author_email)
    if not wanted:
        return {}
    per_author: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    conditions = [and_(Comment.site_id == sid, author_email_in(emails)) for sid, emails in wanted.items()]
    rows = session.execute(
        select(Comment.site_id, Comment.author_email, Comment.decision, func.count())
        .where(or_(*conditions), Comment.decision.in_(("approve", "reject")))
        .group_by(Comment.site_id, Comment.author_email, Comment.decision)
    )
    for site_id, email, decision, n in rows:
        per_author[(site_id, email_key(email))][decision or ""] += n  # "Ann@…" and "ann@…" add up
    history = {}
    for c in comments:
        if not c.author_email:
            continue
        counts = per_author.get((c.site_id, email_key(c.author_email)), {})
        approved, rejected = counts.get("approve", 0), counts.get("reject", 0)
        # "Before" means the others: the comment itself does not count toward its own author's record.
        if c.decision == "approve":
            approved -= 1
        elif c.decision == "reject":
            rejected -= 1
        history[c.id] = AuthorHistory(max(0, approved), max(0, rejected))
    return history


def campaign_sizes(session: Session, user: CurrentUser, comments: Sequence[Comment]) -> dict[str, int]:
    """How many visible comments share each campaign key shown on the page."""
    keys = sorted({c.campaign_key for c in comments if c.campaign_key})
    if not keys:
        return {}
    stmt = visible(
        select(Comment.campaign_key, func.count()).where(Comment.campaign_key.in_(keys)).group_by(Comment.campaign_key),
        user,
    )
    return {key: n for key, n in session.execute(stmt) if key}


def campaign_members(session: Session, user: CurrentUser, key: str, limit: int = 500) -> list[Comment]:
    """The visible comments of one campaign, newest first."""
    stmt = visible(select(Comment).where(Comment.campaign_key == key), user)
    return list(session.scalars(stmt.order_by(Comment.received_at.desc(), Comment.id.desc()).limit(limit)))


def comment_events(session: Session, comment_id: int) -> list[ModerationEvent]:
    return list(
        session.scalars(
            select(ModerationEvent)
            .where(ModerationEvent.comment_id == comment_id)
            .order_by(ModerationEvent.created_at, ModerationEvent.id)
        )
    )


def other_comments_of_author(session: Session, user: CurrentUser, c: Comment, limit: int = 20) -> list[Comment]:
    """The author's other comments on visible sites (by e-mail, else by IP), newest first."""
    if c.author_email:
        match = author_email_in([c.author_email])
    elif c.author_ip:
        match = Comment.author_ip == c.author_ip
    else:
        return []
    stmt = visible(select(Comment).where(match, Comment.id != c.id), user)
    return list(session.scalars(stmt.order_by(Comment.received_at.desc()).limit(limit)))


def visible_sites(session: Session, user: CurrentUser) -> list[Site]:
    stmt = select(Site).order_by(Site.name, Site.id)
    if not user.is_admin:
        stmt = stmt.where(Site.id.in_(sorted(user.site_ids) or [-1]))
    return list(session.scalars(stmt))


# Who an audit event or a decision names (``ModerationEvent.actor``, ``Comment.decided_by``), in words; a user is
# shown by e-mail address.
ACTOR_WORDS = {
    "model": "the model",
    "worker": "the model",
    "web": "the model (at submission)",
    "blog": "the blog (feedback API)",
    "akismet": "the blog (Akismet report)",
    "import": "history import",
}
# Signed-in users of the UI: user:<id>, and moderator:<id> of earlier versions.
PEOPLE_PREFIXES = ("user:", "moderator:")


def actor_names(session: Session, actors: Iterable[str]) -> dict[str, str]:
    """Each actor in words: a user's e-mail address ("user #N" once deleted), the model, the blog, an import."""
    names = {a: ACTOR_WORDS.get(a, a) for a in actors}
    ids = {}
    for a in names:
        prefix = next((p for p in PEOPLE_PREFIXES if a.startswith(p)), None)
        if prefix is not None and (uid := parse_id(a[len(prefix) :])) is not None:
            ids[a] = uid
            names[a] = f"user #{uid}"
    if ids:
        emails = dict(
            session.execute(select(User.id, User.email).where(User.id.in_(sorted(set(ids.values()))))).tuples().all()
        )
        for a, uid in ids.items():
            if uid in emails:
                names[a] = emails[uid]
    return names
