"""Login and logout. Failed logins are limited twice: per client (rate limit) and per account (lockout)."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.security import check_password_hash

from service import redis_bus
from service.auth import bp, two_factor
from service.auth.lockout import (
    LOCKED,
    LOCKOUT,
    MAX_FAILED_LOGINS,
    Check,
    aware,
    clear_failed_logins,
    count_failed_login,
    guarded_check,
)
from service.auth.session import _safe_next, current_user, end_session, password_fingerprint, start_session
from service.config import settings
from service.db import session_scope
from service.extensions import client_ip_key, limiter
from service.models import User
from service.redis_bus import LIMITS_DB
from service.users import password_matches

log = logging.getLogger(__name__)

LOGIN_FAILED = "Wrong e-mail or password."
CODE_FAILED = "Wrong code."
SECOND_STEP_EXPIRED = "The sign-in took too long: enter your e-mail and password again."
# How long the code may take after the password: an authenticator app is at hand, or the sign-in starts again.
SECOND_STEP_LIFETIME = timedelta(minutes=5)
_SECOND_STEP = "two_factor"  # the Flask session's key of a sign-in waiting for its code
# Checked against for unknown e-mails, so a wrong address costs as much time as a wrong password.
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128


def _count_unknown_failure(email: str) -> int:
    """Count a failed login for an e-mail that names no active account, as an account counts its own (in Redis,
    for as long as a lockout lasts), so that the lockout message does not tell which e-mails have an account.
    0 when Redis cannot be reached: the login itself must not depend on it."""
    key = "bouncer:login-failures:" + hashlib.sha256(email.encode("utf-8")).hexdigest()
    ttl = int(LOCKOUT.total_seconds())
    try:
        r = redis_bus.client(LIMITS_DB, socket_timeout=0.5, connect_timeout=0.5, retries=0)
        failures = int(r.incr(key))  # type: ignore[arg-type]  # the sync client answers an int
        if failures == 1 or failures == MAX_FAILED_LOGINS:  # the window starts, or the "lock" does
            r.expire(key, ttl)
        return failures
    except Exception:
        log.warning("could not count a failed login in Redis", exc_info=True)
        return 0


@bp.app_context_processor
def _inject_user() -> dict[str, object]:
    return {"current_user": current_user()}


@bp.route("/")
def root() -> ResponseReturnValue:
    """The UI starts at the queue (which sends logged-out visitors to the login page)."""
    return redirect(url_for("moderation.queue"))


@bp.route("/login", methods=["GET"])
def login() -> ResponseReturnValue:
    if current_user() is not None:
        return redirect(_safe_next(request.args.get("next")) or url_for("moderation.queue"))
    return render_template("auth/login.html", next=request.args.get("next", ""), email="")


@bp.route("/login", methods=["POST"])
@limiter.limit(lambda: settings().login_rate_limit, key_func=client_ip_key)
def login_post() -> ResponseReturnValue:
    """Check the password; count failures; lock the account for a while after too many."""
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    target = _safe_next(request.form.get("next")) or url_for("moderation.queue")
    now = datetime.now(UTC)
    error = LOGIN_FAILED
    with session_scope() as db:
        user = db.scalars(select(User).where(User.email == email)).first() if email else None
        if user is None or not user.active:
            check_password_hash(_DUMMY_HASH, password)
            if email and _count_unknown_failure(email) >= MAX_FAILED_LOGINS:
                error = LOCKED
        else:
            locked_until = aware(user.locked_until)
            if locked_until is not None and locked_until > now:
                check_password_hash(_DUMMY_HASH, password)  # as long as a real check: the lock is not timed either
                error = LOCKED
            elif password_matches(user, password):
                if two_factor.is_enabled(user):
                    # Not signed in yet, and the failure count stays: it counts wrong codes too, so the password
                    # alone cannot reset it between guesses of the code.
                    _begin_second_step(user, target, now)
                    return redirect(url_for("auth.login_two_factor"))
                if clear_failed_logins(db, user.id, now):
                    start_session(db, user)
                    return redirect(target)
                error = LOCKED  # a wrong guess sent at the same moment locked the account since it was read
            elif count_failed_login(db, user.id, now):
                error = LOCKED
    return render_template("auth/login.html", next=request.form.get("next", ""), email=email, error=error), 401


def _begin_second_step(user: User, target: str, now: datetime) -> None:
    """The password was right and the user has two-factor sign-in on: this browser (its signed session cookie, not
    a server-side session) may send a code for this user until SECOND_STEP_LIFETIME has passed. The password's
    fingerprint goes along, so a password changed meanwhile ends the step."""
    session.clear()  # nobody stays signed in here, whoever it was
    session[_SECOND_STEP] = {
        "uid": user.id,
        "pw": password_fingerprint(user.password_hash),
        "at": now.timestamp(),
        "next": target,
    }


def _second_step() -> dict[str, Any] | None:
    """This browser's sign-in waiting for a code, unless there is none or it ran out."""
    pending = session.get(_SECOND_STEP)
    if not isinstance(pending, dict) or not isinstance(pending.get("uid"), int):
        return None
    at = pending.get("at")
    if not isinstance(at, int | float) or datetime.now(UTC).timestamp() - at > SECOND_STEP_LIFETIME.total_seconds():
        session.pop(_SECOND_STEP, None)
        return None
    return pending


@bp.route("/login/two-factor", methods=["GET"])
def login_two_factor() -> ResponseReturnValue:
    """The second step of a sign-in: the code from the authenticator app, or a recovery code."""
    if _second_step() is None:
        flash(SECOND_STEP_EXPIRED, "warning")
        return redirect(url_for("auth.login"))
    return render_template("auth/login_two_factor.html", title="Sign in")


@bp.route("/login/two-factor", methods=["POST"])
@limiter.limit(lambda: settings().login_rate_limit, key_func=client_ip_key)
def login_two_factor_post() -> ResponseReturnValue:
    """Check the code; a wrong one counts as a failed login of the account (the same lockout as wrong passwords)."""
    pending = _second_step()
    if pending is None:
        flash(SECOND_STEP_EXPIRED, "warning")
        return redirect(url_for("auth.login"))
    code = request.form.get("code", "")
    now = datetime.now(UTC)
    error = CODE_FAILED
    with session_scope() as db:
        user = db.get(User, pending["uid"])
        if (
            user is None
            or not user.active
            or not two_factor.is_enabled(user)
            or pending.get("pw") != password_fingerprint(user.password_hash)
        ):
            session.pop(_SECOND_STEP, None)  # the account changed since the password was checked: start again
            flash(SECOND_STEP_EXPIRED, "warning")
            return redirect(url_for("auth.login"))
        result = guarded_check(db, user, lambda: two_factor.verify_second_factor(db, user, code), now)
        if result is Check.PASSED:
            target = _safe_next(pending.get("next")) or url_for("moderation.queue")
            start_session(db, user)  # clears the Flask session, the pending step with it
            return redirect(target)
        if result is Check.LOCKED:
            error = LOCKED
            session.pop(_SECOND_STEP, None)
    if error == LOCKED:
        return render_template("auth/login.html", next=pending.get("next", ""), email="", error=error), 401
    return render_template("auth/login_two_factor.html", title="Sign in", error=error), 401


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    end_session()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
