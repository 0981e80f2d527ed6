"""The admin console: sites and keys, callbacks, thresholds, allow/block lists, users, models."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from service.admin import activity, personal_data_page, retraining, views  # noqa: E402,F401  # registers the routes on bp
