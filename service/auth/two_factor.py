"""Two-factor sign-in with TOTP (RFC 6238: 6 digits, 30 seconds, SHA-1, as authenticator apps use), per user.

A user turns it on at ``/account/two-factor``: the server makes a secret and keeps it as the user's pending one
(never taken back from the form), the page shows it as a QR code (inline SVG: the CSP allows no inline scripts
or styles, and nothing outside 'self') and as text, and a current code with the user's password turns it on.
Ten recovery codes are then shown once; only their sha256 is kept (``RecoveryCode``), and each works once.

Secrets are stored encrypted (Fernet, with a key derived by HKDF from the app's secret key): a copy of the database
alone does not give the codes. Changing the secret key makes them unreadable; ``bouncer users disable-2fa EMAIL``
then turns a user's two-factor sign-in off.

A code is accepted for the current time step and one either side (clocks drift), and only for a step after the last
one a code was accepted for (one conditional UPDATE), so a code seen over a shoulder cannot be used again.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from functools import cache

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.auth import bp
from service.auth.lockout import LOCKED, Check, guarded_check
from service.auth.session import end_user_sessions, login_required, require_user, this_session_token
from service.config import settings
from service.db import session_scope
from service.extensions import client_ip_key, limiter
from service.models import RecoveryCode, User
from service.security import hash_key
from service.users import password_matches

log = logging.getLogger(__name__)

ISSUER = "Bouncer"
STEP_SECONDS = 30
DIGITS = 6
VALID_WINDOW = 1  # steps either side of the current one
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper
_RECOVERY_GROUPS, _RECOVERY_GROUP_LEN = 4, 4  # 16 characters of 31: about 79 bits, enough for a plain sha256
PENDING_LIFETIME = timedelta(minutes=15)  # an enrolment not confirmed by then starts again
_DIGITS_ONLY = re.compile(r"[0-9]{6}")


# --- secrets at rest ------------------------------------------------------------------------------------------


@cache
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"bouncer two-factor secrets v1").derive(
        secret_key.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secret(secret: str) -> str:
    return _fernet(settings().secret_key).encrypt(secret.encode("ascii")).decode("ascii")


def decrypt_secret(token: str, max_age: timedelta | None = None) -> str | None:
    """The plain secret; None when it cannot be read (the secret key changed) or is older than ``max_age``."""
    try:
        ttl = int(max_age.total_seconds()) if max_age is not None else None
        return _fernet(settings().secret_key).decrypt(token.encode("ascii"), ttl=ttl).decode("ascii")
    except (InvalidToken, ValueError):
        if max_age is None:
            log.warning("a stored two-factor secret cannot be decrypted: was the secret key changed?")
        return None


# --- codes ------------------------------------------------------------------------------------------------------


def matching_step(secret: str, code: str, now: datetime | None = None) -> int | None:
    """The time step (current or one either side) whose code this is; None when none."""
    code = code.strip().replace(" ", "")
    if not _DIGITS_ONLY.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int((now or datetime.now(UTC)).timestamp()) // STEP_SECONDS
    found = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            found = step  # no early exit: every candidate is compared
    return found


def _use_step(db: Session, user_id: int, step: int) -> bool:
    """Record that a code of ``step`` was used, unless one of it or a later step already was (a replay); one UPDATE,
    so two requests with the same code cannot both pass."""
    result = db.execute(
        update(User)
        .where(User.id == user_id, User.totp_secret.is_not(None))
        .where(User.totp_last_step.is_(None) | (User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # an UPDATE answers a CursorResult


def normalize_recovery_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def new_recovery_codes() -> list[str]:
    def one() -> str:
        groups = (
            "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_GROUP_LEN))
            for _ in range(_RECOVERY_GROUPS)
        )
        return "-".join(groups)

    return [one() for _ in range(RECOVERY_CODE_COUNT)]


def _use_recovery_code(db: Session, user_id: int, code: str) -> bool:
    """Delete the user's recovery code that this is; True when there was one (a DELETE: it works once)."""
    normalized = normalize_recovery_code(code)
    if not normalized:
        return False
    result = db.execute(
        delete(RecoveryCode).where(RecoveryCode.user_id == user_id, RecoveryCode.code_hash == hash_key(normalized))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # a DELETE answers a CursorResult


def verify_second_factor(db: Session, user: User, code: str) -> bool:
    """A current TOTP code not used before, or an unused recovery code (then used up) of a user with 2FA on."""
    if user.totp_secret is None:
        return False
    if _DIGITS_ONLY.fullmatch(code.strip().replace(" ", "")):
        secret = decrypt_secret(user.totp_secret)
        step = matching_step(secret, code) if secret is not None else None
        return step is not None and _use_step(db, user.id, step)
    return _use_recovery_code(db, user.id, code)


def is_enabled(user: User) -> bool:
    return user.totp_secret is not None


def disable(db: Session, user: User) -> None:
    """Turn a user's two-factor sign-in off (their own choice, an admin's, the CLI's): secret and codes go."""
    user.totp_secret = user.totp_pending_secret = None
    user.totp_enabled_at = user.totp_last_step = None
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> Markup:
    """The enrolment QR code as inline SVG (attributes only, no style: within the CSP); segno escapes the title."""
    svg = segno.make(uri, error="m").svg_inline(
        scale=5, dark="#000", light="#fff", title="QR code for an authenticator app", svgclass="qr", lineclass=None
    )
    return Markup(svg)  # segno's own SVG; the only text in it (the title) is ours


# --- the account page -----------------------------------------------------------------------------------------


def _page(db: Session, user: User, recovery_codes: list[str] | None = None, status: int = 200) -> ResponseReturnValue:
    pending = decrypt_secret(user.totp_pending_secret, PENDING_LIFETIME) if user.totp_pending_secret else None
    remaining = db.scalar(select(func.count()).select_from(RecoveryCode).where(RecoveryCode.user_id == user.id))
    uri = provisioning_uri(pending, user.email) if pending else None
    return render_template(
        "auth/two_factor.html",
        title="Two-factor sign-in",
        enabled=is_enabled(user),
        enabled_at=user.totp_enabled_at,
        pending_secret=pending,
        qr=qr_svg(uri) if uri else None,
        recovery_codes=recovery_codes,
        remaining=remaining or 0,
    ), status


def _own_user(db: Session) -> User:
    return db.get(User, require_user().id) or abort(404)


@bp.route("/account/two-factor")
@login_required
def two_factor() -> ResponseReturnValue:
    """Whether two-factor sign-in is on; the enrolment in progress (QR code, secret, confirm form)."""
    with session_scope() as db:
        return _page(db, _own_user(db))


@bp.route("/account/two-factor/start", methods=["POST"])
@login_required
def two_factor_start() -> ResponseReturnValue:
    """Make a new secret for this user (a restart replaces the previous pending one)."""
    with session_scope() as db:
        user = _own_user(db)
        if is_enabled(user):
            flash("Two-factor sign-in is already on.", "info")
        else:
            user.totp_pending_secret = encrypt_secret(pyotp.random_base32())
    return redirect(url_for("auth.two_factor"))


@bp.route("/account/two-factor/enable", methods=["POST"])
@login_required
@limiter.limit(lambda: settings().login_rate_limit, key_func=client_ip_key)
def two_factor_enable() -> ResponseReturnValue:
    """A current code of the pending secret and the password turn it on; the recovery codes are in this answer only.
    The user's other sessions end."""
    code = request.form.get("code", "")
    password = request.form.get("password", "")
    with session_scope() as db:
        user = _own_user(db)
        if is_enabled(user):
            flash("Two-factor sign-in is already on.", "info")
            return redirect(url_for("auth.two_factor"))
        pending = decrypt_secret(user.totp_pending_secret, PENDING_LIFETIME) if user.totp_pending_secret else None
        if pending is None:
            flash("The setup ran out of time: start again.", "warning")
            return _page(db, user, status=400)
        checked = guarded_check(db, user, lambda: password_matches(user, password), datetime.now(UTC))
        if checked is not Check.PASSED:
            flash(LOCKED if checked is Check.LOCKED else "Wrong password.", "warning")
            return _page(db, user, status=400)
        step = matching_step(pending, code)
        if step is None:
            flash("That code is not the current one: check the app's clock and try the next code.", "warning")
            return _page(db, user, status=400)
        user.totp_secret, user.totp_pending_secret = user.totp_pending_secret, None
        user.totp_enabled_at, user.totp_last_step = datetime.now(UTC), step  # this code does not also sign in
        db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        codes = new_recovery_codes()
        now = datetime.now(UTC)
        db.add_all(
            RecoveryCode(user_id=user.id, code_hash=hash_key(normalize_recovery_code(c)), created_at=now) for c in codes
        )
        db.flush()
        # Whoever signed in elsewhere with the password alone (a leaked one) is signed out; this browser stays.
        end_user_sessions(db, user.id, keep_token=this_session_token())
        flash(
            "Two-factor sign-in is on. Keep the recovery codes below somewhere safe: they are shown only now.",
            "success",
        )
        return _page(db, user, recovery_codes=codes)


@bp.route("/account/two-factor/disable", methods=["POST"])
@login_required
@limiter.limit(lambda: settings().login_rate_limit, key_func=client_ip_key)
def two_factor_disable() -> ResponseReturnValue:
    """The password and a current code (or a recovery code) turn it off."""
    code = request.form.get("code", "")
    password = request.form.get("password", "")
    with session_scope() as db:
        user = _own_user(db)
        if not is_enabled(user):
            return redirect(url_for("auth.two_factor"))
        checked = guarded_check(
            db,
            user,
            lambda: password_matches(user, password) and verify_second_factor(db, user, code),
            datetime.now(UTC),
        )
        if checked is not Check.PASSED:
            flash(LOCKED if checked is Check.LOCKED else "Wrong password or code.", "warning")
            return _page(db, user, status=400)
        disable(db, user)
    flash("Two-factor sign-in is off.", "success")
    return redirect(url_for("auth.two_factor"))
