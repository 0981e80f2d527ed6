"""Akismet's usage-limit and get-stats answers, counted from Bouncer's own comments and labels.

Akismet's words map onto Bouncer's records: ``spam``/``ham`` are the site's automatic decisions, by either API (the
purged-reject totals do not know the API), as comment-check answers them (a hold counts as spam when the site answers
holds with ``true``); ``missed_spam`` and ``false_positives`` are current human labels that contradict that answer.
``usage`` (usage-limit) counts comment-checks only. Automatic rejects the retention purge deleted still count, as
daily totals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from service.models import Comment, DeletedRejectCount, Label, Site

STATS_PERIODS = {"60-days": "day", "6-months": "month", "all": "year"}
DEFAULT_STATS_PERIOD = "6-months"


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def usage_limit(session: Session, site: Site, now: datetime | None = None) -> dict[str, Any]:
    """``/1.2/usage-limit``: this month's comment-checks of the site; Bouncer has no monthly cap ("none")."""
    now = now or datetime.now(UTC)
    usage = session.scalar(
        select(func.count(Comment.id)).where(
            Comment.site_id == site.id, Comment.source == "akismet", Comment.received_at >= month_start(now)
        )
    )
    return {"limit": "none", "usage": int(usage or 0), "percentage": "0.00", "throttled": False}


def _period(session: Session, column: Any, unit: str) -> ColumnElement[str]:
    """The calendar period (UTC) of a timestamp as text, in the database's own dialect."""
    if session.get_bind().dialect.name == "sqlite":
        return func.strftime({"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[unit], column)
    pattern = {"day": "YYYY-MM-DD", "month": "YYYY-MM", "year": "YYYY"}[unit]
    return func.to_char(func.timezone("UTC", column), pattern)


def _since(now: datetime, period: str) -> datetime | None:
    if period == "60-days":
        return (now - timedelta(days=59)).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "6-months":
        start = month_start(now)
        for _ in range(5):
            start = month_start(start - timedelta(days=1))
        return start
    return None


def _first_day(key: str, unit: str) -> str:
    return {"day": key, "month": f"{key}-01", "year": f"{key}-01-01"}[unit]


def get_stats(session: Session, site: Site, period: str, now: datetime | None = None) -> dict[str, Any]:
    """``/1.1/get-stats``: totals, accuracy and a breakdown by day (60-days), month (6-months) or year (all)."""
    now = now or datetime.now(UTC)
    if period not in STATS_PERIODS:
        period = DEFAULT_STATS_PERIOD
    unit = STATS_PERIODS[period]
    since = _since(now, period)
    spam_answers = {"reject", "hold"} if site.akismet_hold_is_spam else {"reject"}

    bucket = _period(session, Comment.received_at, unit)
    conditions = [Comment.site_id == site.id, Comment.is_test.is_(False), Comment.auto_decision.is_not(None)]
    if since is not None:
        conditions.append(Comment.received_at >= since)
    empty = {"spam": 0, "ham": 0, "missed_spam": 0, "false_positives": 0}
    breakdown: dict[str, dict[str, Any]] = {}

    def row(key: str) -> dict[str, Any]:
        return breakdown.setdefault(key, {**empty, "da": _first_day(key, unit)})

    decided = select(bucket, Comment.auto_decision, func.count(Comment.id)).where(*conditions)
    for key, auto, count in session.execute(decided.group_by(bucket, Comment.auto_decision)):
        row(str(key))["spam" if auto in spam_answers else "ham"] += int(count)
    for key, auto, label, count in session.execute(
        select(bucket, Comment.auto_decision, Label.label, func.count(Label.id))
        .join(Comment, Label.comment_id == Comment.id)
        .where(*conditions, Label.superseded.is_(False))
        .group_by(bucket, Comment.auto_decision, Label.label)
    ):
        said_spam = auto in spam_answers
        if label == "ham" and said_spam:
            row(str(key))["false_positives"] += int(count)
        elif label != "ham" and not said_spam:
            row(str(key))["missed_spam"] += int(count)

    # Automatic rejects the retention purge deleted (service.retention) were spam answers: their counts stay.
    purged = select(DeletedRejectCount.day, DeletedRejectCount.comments).where(DeletedRejectCount.site_id == site.id)
    if since is not None:
        purged = purged.where(DeletedRejectCount.day >= since.strftime("%Y-%m-%d"))
    for day, count in session.execute(purged):
        row(day[: {"day": 10, "month": 7, "year": 4}[unit]])["spam"] += int(count)

    totals = {name: sum(int(b[name]) for b in breakdown.values()) for name in empty}
    checked = totals["spam"] + totals["ham"]
    wrong = totals["missed_spam"] + totals["false_positives"]
    accuracy = round(100.0 * (checked - wrong) / checked, 2) if checked else 100.0
    ordered = dict(sorted(breakdown.items(), reverse=True))
    # time_saved is Akismet's estimate of moderator seconds; Bouncer does not invent one.
    return {**totals, "accuracy": accuracy, "breakdown": ordered, "time_saved": 0}
