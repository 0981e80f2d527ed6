"""Users: creation and password checks (hashed with werkzeug's scrypt)."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from service.models import Role, User

MIN_PASSWORD_LENGTH = 10
MAX_EMAIL_CHARS = 320  # users.email
# The WHATWG "valid e-mail address": what the admin form's <input type="email"> accepts, checked here for every caller
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def create_user(session: Session, email: str, role: str, password: str | None = None) -> tuple[User, str | None]:
    """Create a user; when no password is given one is generated and returned (shown once)."""
    email = email.strip().lower()
    if role not in {r.value for r in Role}:
        raise ValueError(f"role must be one of: {', '.join(r.value for r in Role)}")
    if len(email) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(email):
        raise ValueError(f"'{email}' is not an e-mail address (e.g. moderator@blog.example)")
    if session.scalars(select(User).where(User.email == email)).first() is not None:
        raise ValueError(f"a user with e-mail {email} already exists")
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = User(email=email, role=role, password_hash=generate_password_hash(password))
    session.add(user)
    session.flush()
    return user, generated


def password_matches(user: User, password: str) -> bool:
    return check_password_hash(user.password_hash, password)
