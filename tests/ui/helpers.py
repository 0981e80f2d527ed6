"""Helpers of the UI tests: users and comments inserted with the ORM, sign-in, audit-log reads, browser sessions."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def make_ui_site(callback_url: str | None = None) -> dict[str, Any]:
    from service.db import session_scope
    from service.sites import create_site

    with session_scope() as db:
        site, keys = create_site(db, unique("Blog "), "https://blog.example", callback_url)
        return {"id": site.id, "name": site.name, "api_key": keys.api_key}


def make_user(role: str = "moderator", site_ids: tuple[int, ...] = ()) -> dict[str, Any]:
    """Create a user with the test password; moderators get the given sites."""
    from service.db import session_scope
    from service.models import UserSite
    from service.users import create_user

    with session_scope() as db:
        user, _ = create_user(db, f"{unique(role)}@example.test", role, PASSWORD)
        for sid in site_ids:
            db.add(UserSite(user_id=user.id, site_id=sid))
        return {"id": user.id, "email": user.email, "password": PASSWORD, "role": role}


def add_comment(site_id: int, **fields: Any) -> int:
    """Insert a decided (held, by default) comment directly, as the scorer would have left it."""
    from service.db import session_scope
    from service.models import Comment

    values: dict[str, Any] = {
        "site_id": site_id,
        "external_id": unique("ext-"),
        "content": "A perfectly ordinary comment about the post.",
        "author_name": "Ada Reader",
        "author_email": f"{unique('ada')}@example.org",
        "author_ip": "192.0.2.10",
        "post_title": "Gardening in winter",
        "post_url": "https://blog.example/winter",
        "status": "decided",
        "decision": "hold",
        "auto_decision": "hold",
        "category": "spam",
        "decided_by": "worker",
        "spam_score": 0.62,
        "abuse_score": 0.08,
        "reasons": ["spam score 0.62: link to a new domain"],
        "received_at": datetime.now(UTC),
        "decided_at": datetime.now(UTC),
    }
    values.update(fields)
    with session_scope() as db:
        c = Comment(**values)
        db.add(c)
        db.flush()
        return c.id


def comment_state(comment_id: int) -> tuple[str | None, str | None]:
    from service.db import session_scope
    from service.models import Comment

    with session_scope() as db:
        c = db.get(Comment, comment_id)
        assert c is not None
        return c.decision, c.category


def events_of(comment_id: int) -> list[tuple[str, str, str | None, str | None]]:
    """The audit log of a comment: (actor, action, from, to), oldest first."""
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import ModerationEvent

    with session_scope() as db:
        rows = db.execute(
            select(
                ModerationEvent.actor,
                ModerationEvent.action,
                ModerationEvent.from_decision,
                ModerationEvent.to_decision,
            )
            .where(ModerationEvent.comment_id == comment_id)
            .order_by(ModerationEvent.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def current_labels(comment_id: int) -> list[str]:
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import Label

    with session_scope() as db:
        return list(db.scalars(select(Label.label).where(Label.comment_id == comment_id, Label.superseded.is_(False))))


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client: Any, user: dict[str, Any]) -> str:
    """Sign a Flask test client in; returns a CSRF token of its session."""
    page = client.get("/login")
    token = csrf_from(page.get_data(as_text=True))
    response = client.post(
        "/login", data={"email": user["email"], "password": user["password"], "csrf_token": token, "next": ""}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return csrf_from(client.get("/moderation/").get_data(as_text=True))


class BrowserSession:
    """One signed-in browser context, recording dialogs and CSP/JS errors so tests can assert none happened."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)

    def login(self, user: dict[str, Any]) -> None:
        self.page.goto("/login")
        self.page.fill('input[name="email"]', user["email"])
        self.page.fill('input[name="password"]', user["password"])
        self.page.click('button[type="submit"]')
        self.page.wait_for_url(re.compile(r".*/moderation/.*"))

    def close(self) -> None:
        self.context.close()
