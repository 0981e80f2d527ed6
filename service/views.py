"""How a comment is shown to API clients and callbacks: one function, so every answer agrees."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.models import Comment


def utc_iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset; SQLite hands timestamps back without a zone, PostgreSQL with one."""
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def comment_view(c: Comment) -> dict[str, Any]:
    """The JSON shape of a comment's status and decision."""
    view: dict[str, Any] = {
        "id": c.id,
        "external_id": c.external_id,
        "status": c.status,
    }
    if c.status == "decided":
        view["decision"] = c.decision
        if c.category and c.decision in ("reject", "hold"):
            view["category"] = c.category
        view["scores"] = {
            "spam": None if c.spam_score is None else round(c.spam_score, 4),
            "abuse": None if c.abuse_score is None else round(c.abuse_score, 4),
        }
        view["reasons"] = list(c.reasons or [])
        view["model"] = dict(c.model_versions or {})
        view["decided_by"] = c.decided_by
        view["decided_at"] = utc_iso(c.decided_at)
    return view
