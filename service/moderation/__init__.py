"""The moderator's UI: the queue of held comments, all comments, comment detail, actions, undo, campaigns."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("moderation", __name__, url_prefix="/moderation")

from service.moderation import views  # noqa: E402,F401  # registers the routes on bp
