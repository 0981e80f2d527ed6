"""The signed-in user of a request, and the decorators that guard views.

The session cookie holds the user id, a fingerprint of the password hash and a random session token. The token
names a ``UserSession`` row: signing out ends that row, so a copy of the cookie (another tab's, a stolen one) is
dead on the server too. A session ends by itself ``SESSION_LIFETIME`` after sign-in. Changing a password or
deactivating a user ends every session of that user at the next request: the admin pages and /account end the rows
(``end_user_sessions``), so they stay ended if the user is reactivated; the password fingerprint also catches a
password changed outside them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import abort, g, jsonify, redirect, request, session, url_for
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service.db import session_scope
from service.models import Role, User, UserSession, UserSite
from service.security import hash_key

F = TypeVar("F", bound=Callable[..., Any])

# A sign-in lasts at most this long, however often it is used (a browser that restores its tabs keeps the cookie).
SESSION_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class CurrentUser:
    """A plain snapshot of the signed-in user, safe to use after the database session closed."""

    id: int
    email: str
    role: str
    site_ids: frozenset[int]

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def actor(self) -> str:
        """How this user appears in the audit log and on labels."""
        return f"user:{self.id}"

    def may_see_site(self, site_id: int) -> bool:
        return self.is_admin or site_id in self.site_ids


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def start_session(db: Session, user: User) -> None:
    """Sign the user in; a fresh session so a pre-login session id cannot be carried over."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    # Housekeeping: this user's sessions that were signed out, or ran out, a while ago are of no more use.
    db.execute(
        delete(UserSession).where(
            UserSession.user_id == user.id,
            (UserSession.ended_at < now - timedelta(days=1))
            | (UserSession.created_at < now - SESSION_LIFETIME - timedelta(days=1)),
        )
    )
    db.add(UserSession(token_hash=hash_key(token), user_id=user.id, created_at=now))
    session.clear()
    session["uid"] = user.id
    session["pw"] = password_fingerprint(user.password_hash)
    session["sid"] = token
    session.permanent = False


def end_session() -> None:
    """Sign out: end this session on the server (not only in this browser's cookie) and clear the cookie."""
    token = session.get("sid")
    if isinstance(token, str):
        with session_scope() as db:
            db.execute(
                update(UserSession)
                .where(UserSession.token_hash == hash_key(token), UserSession.ended_at.is_(None))
                .values(ended_at=datetime.now(UTC))
            )
    session.clear()
    g.pop("bouncer_user", None)


def end_user_sessions(db: Session, user_id: int, keep_token: str | None = None) -> None:
    """End every live session of a user on the server (deactivated, password reset by an admin), but the one whose
    token is ``keep_token`` (the browser that changed its own password stays signed in)."""
    stmt = update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
    if keep_token is not None:
        stmt = stmt.where(UserSession.token_hash != hash_key(keep_token))
    db.execute(stmt.values(ended_at=datetime.now(UTC)))


def this_session_token() -> str | None:
    """The token of this request's signed-in session (to keep it in ``end_user_sessions``)."""
    token = session.get("sid")
    return token if isinstance(token, str) else None


def keep_this_session(password_hash: str) -> None:
    """This browser changed its own user's password: it stays signed in under the new one."""
    session["pw"] = password_fingerprint(password_hash)


def set_password(db: Session, user: User, password: str, *, own: bool) -> None:
    """Give ``user`` a new password (the caller checked its length): the failure count and any lock are cleared and
    every session of the user ends, but this browser's when ``own`` (the user changed their own password here: it
    stays signed in under the new one). Used by the admin's reset and by the user's own change on /account."""
    from werkzeug.security import generate_password_hash

    user.password_hash = generate_password_hash(password)
    user.failed_logins, user.locked_until = 0, None
    end_user_sessions(db, user.id, keep_token=this_session_token() if own else None)
    if own:
        # Set in the cookie before the transaction commits: should the commit fail, this browser is signed out
        # (the old hash no longer matches the cookie), never signed in under a password that was not stored.
        keep_this_session(user.password_hash)


def current_user() -> CurrentUser | None:
    """The signed-in user of this request, read once per request; None when logged out or no longer valid."""
    if "bouncer_user" in g:
        return cast(CurrentUser | None, g.bouncer_user)
    found: CurrentUser | None = None
    uid, token = session.get("uid"), session.get("sid")
    if isinstance(uid, int) and isinstance(token, str):
        with session_scope() as db:
            live = db.scalar(
                select(UserSession.id).where(
                    UserSession.token_hash == hash_key(token),
                    UserSession.user_id == uid,
                    UserSession.ended_at.is_(None),
                    UserSession.created_at > datetime.now(UTC) - SESSION_LIFETIME,
                )
            )
            user = db.get(User, uid) if live is not None else None
            if user is not None and user.active and session.get("pw") == password_fingerprint(user.password_hash):
                site_ids = frozenset(db.scalars(select(UserSite.site_id).where(UserSite.user_id == uid)))
                found = CurrentUser(user.id, user.email, user.role, site_ids)
    if found is None and uid is not None:
        session.clear()
    g.bouncer_user = found
    return found


def wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


def _safe_next(target: str | None) -> str | None:
    """Only same-site paths: an open redirect after login would make phishing easy.

    Control characters are refused outright: browsers and ``urllib.parse`` (which Werkzeug's ``redirect`` runs the
    Location through) drop tabs and newlines, so "/<tab>/evil.example" would leave as "//evil.example" (another
    host), and a newline would fail the response. What remains must parse as a path with no scheme and no host.
    """
    if not target or any(ch < " " or ch == "\x7f" for ch in target) or "\\" in target:
        return None
    if not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def login_required(view: F) -> F:
    """Send logged-out users to the login page (JSON callers get 401 and a link to it)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            login_url = url_for("auth.login", next=request.full_path if request.method == "GET" else None)
            if wants_json():
                return jsonify(error={"code": "login_required", "message": "please sign in", "login": login_url}), 401
            return redirect(login_url)
        return view(*args, **kwargs)

    return cast(F, wrapped)


def admin_required(view: F) -> F:
    """Signed in and an admin; moderators get 403."""

    @login_required
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None or not user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast(F, wrapped)


def require_user() -> CurrentUser:
    """The current user inside a ``login_required`` view."""
    user = current_user()
    if user is None:
        abort(401)
    return user
