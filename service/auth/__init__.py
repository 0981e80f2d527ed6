"""Login, logout and who may see what: sessions for people (moderators, admins), not for blogs."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("auth", __name__)

from service.auth import two_factor, views  # noqa: E402,F401  # register the routes on bp
from service.auth.session import (  # noqa: E402  # re-exported: the decorators other blueprints use
    CurrentUser,
    admin_required,
    current_user,
    login_required,
)

__all__ = ["CurrentUser", "admin_required", "bp", "current_user", "login_required"]

from service.auth import account  # noqa: E402,F401  # registers the account page's routes on bp
