"""The account page of the signed-in user: change their own password, see their sessions and sign out the others.

The password form asks for the current password, and a wrong one counts towards the same lockout as the login
form (``lockout.guarded_check``): a stolen session cookie must not become a way to guess the password behind it. The
POST is rate-limited per client like the login.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from service.auth import bp, two_factor
from service.auth.lockout import LOCKED, Check, guarded_check
from service.auth.session import (
    SESSION_LIFETIME,
    end_user_sessions,
    login_required,
    require_user,
    set_password,
    this_session_token,
)
from service.config import settings
from service.db import session_scope
from service.extensions import client_ip_key, limiter
from service.models import User, UserSession
from service.security import hash_key
from service.users import MIN_PASSWORD_LENGTH, password_matches

WRONG_CURRENT = "The current password is wrong."
TOO_SHORT = f"The new password must have at least {MIN_PASSWORD_LENGTH} characters."
NO_MATCH = "The new password and its repetition differ."
SAME = "The new password must differ from the current one."
CHANGED = "Password changed. Every other session of yours has been signed out."
OTHERS_ENDED = "Every other session of yours has been signed out."


def _live_sessions(user_id: int) -> list[dict[str, Any]]:
    """The user's sessions that still sign in, newest first; ``this`` marks the one of this request."""
    token = this_session_token()
    this_hash = hash_key(token) if token else None
    now = datetime.now(UTC)
    with session_scope() as db:
        rows = db.execute(
            select(UserSession.token_hash, UserSession.created_at)
            .where(
                UserSession.user_id == user_id,
                UserSession.ended_at.is_(None),
                UserSession.created_at > now - SESSION_LIFETIME,
            )
            .order_by(UserSession.created_at.desc(), UserSession.id.desc())
        ).all()
    return [
        {"created_at": r.created_at, "ends_at": r.created_at + SESSION_LIFETIME, "this": r.token_hash == this_hash}
        for r in rows
    ]


def _page(error: str | None = None, status: int = 200) -> ResponseReturnValue:
    user = require_user()
    with session_scope() as db:
        two_factor_on = two_factor.is_enabled(db.get(User, user.id) or abort(404))
    return (
        render_template(
            "auth/account.html",
            title="Account",
            two_factor_on=two_factor_on,
            sessions=_live_sessions(user.id),
            min_password=MIN_PASSWORD_LENGTH,
            lifetime_hours=int(SESSION_LIFETIME.total_seconds() // 3600),
            error=error,
        ),
        status,
    )


@bp.route("/account", methods=["GET"])
@login_required
def account() -> ResponseReturnValue:
    return _page()


@bp.route("/account/password", methods=["POST"])
@login_required
@limiter.limit(lambda: settings().login_rate_limit, key_func=client_ip_key)
def account_password() -> ResponseReturnValue:
    """Change the user's own password. The new one is checked first (that tells nothing about the current one),
    then the current one as the login checks it: refused while locked, a wrong one counted towards the lock."""
    current = request.form.get("current_password", "")
    new = request.form.get("new_password", "")
    repeat = request.form.get("repeat_password", "")
    if len(new) < MIN_PASSWORD_LENGTH:
        return _page(TOO_SHORT, 400)
    if new != repeat:
        return _page(NO_MATCH, 400)
    if new == current:
        return _page(SAME, 400)
    now = datetime.now(UTC)
    with session_scope() as db:
        user = db.get(User, require_user().id) or abort(404)
        result = guarded_check(db, user, lambda: password_matches(user, current), now)
        if result is Check.PASSED:
            set_password(db, user, new, own=True)
    if result is not Check.PASSED:
        return _page(LOCKED if result is Check.LOCKED else WRONG_CURRENT, 403)
    flash(CHANGED, "success")
    return redirect(url_for("auth.account"))


@bp.route("/account/sessions/end-others", methods=["POST"])
@login_required
def account_end_other_sessions() -> ResponseReturnValue:
    """Sign out every other browser of this user; this one stays signed in."""
    uid = require_user().id
    with session_scope() as db:
        end_user_sessions(db, uid, keep_token=this_session_token())
    flash(OTHERS_ENDED, "success")
    return redirect(url_for("auth.account"))
