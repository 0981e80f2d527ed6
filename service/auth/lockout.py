"""Failed sign-ins per account: counted, and the account locked for a while after too many (the login form, its
two-factor step, and a signed-in user confirming a change with their password all count towards one lock)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import case, update
from sqlalchemy.orm import Session

from service.models import User

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)

LOCKED = "Too many failed attempts. This account is locked for a few minutes."


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def count_failed_login(db: Session, user_id: int, now: datetime) -> bool:
    """Count a wrong password for an account in one UPDATE, and lock it at the MAX_FAILED_LOGINS-th; True when this
    failure locked it (or a concurrent one just did).

    Read-modify-write would let wrong guesses made at the same moment count as one. A lock that has run out starts
    a new count; a lock still running is kept as it is (a concurrent guess does not extend it).
    """
    expired = User.locked_until.is_not(None) & (User.locked_until <= now)
    failed = case((expired, 1), else_=User.failed_logins + 1)
    locked_until = case(
        (User.locked_until > now, User.locked_until),
        (failed >= MAX_FAILED_LOGINS, now + LOCKOUT),
        else_=None,
    )
    row = db.execute(
        update(User)
        .where(User.id == user_id)
        .values(failed_logins=failed, locked_until=locked_until)
        .returning(User.locked_until)
        .execution_options(synchronize_session=False)  # the loaded User is not used after this
    ).one()
    return row.locked_until is not None


def clear_failed_logins(db: Session, user_id: int, now: datetime) -> bool:
    """Reset the failure count of an account that is not locked, in one conditional UPDATE; False when it is locked.

    The lock read at the start of a login is not enough: a wrong guess sent at the same moment may lock the account
    after that read, and the right password must not then sign in past the lock.
    """
    unlocked = User.locked_until.is_(None) | (User.locked_until <= now)
    result = db.execute(
        update(User)
        .where(User.id == user_id, unlocked)
        .values(failed_logins=0, locked_until=None)
        .execution_options(synchronize_session=False)  # start_session reads only the id and the password hash
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # an UPDATE answers a CursorResult


class Check(Enum):
    """What a guarded check answered."""

    PASSED = "passed"
    WRONG = "wrong"
    LOCKED = "locked"


def guarded_check(db: Session, user: User, check: Callable[[], bool], now: datetime) -> Check:
    """Run ``check`` (a password or a code of the signed-in ``user``, asked again before a change to how they sign
    in) under the account's lock: refused while locked without running it, a wrong answer counted towards the lock,
    a right one clearing the count. A stolen session cookie must not become a way to guess what stands behind it.
    """
    locked_until = aware(user.locked_until)
    if locked_until is not None and locked_until > now:
        return Check.LOCKED
    if check():
        # False when a wrong guess sent at the same moment locked the account since it was read.
        return Check.PASSED if clear_failed_logins(db, user.id, now) else Check.LOCKED
    return Check.LOCKED if count_failed_login(db, user.id, now) else Check.WRONG
