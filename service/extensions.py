"""Flask extensions, created once and attached with ``init_app``."""

from __future__ import annotations

import hashlib

from flask import request
from flask_limiter import Limiter
from flask_wtf import CSRFProtect


def _rate_key() -> str:
    """Limit per API key where one is sent (so one noisy site cannot starve another), else per client IP."""
    auth = request.headers.get("Authorization", "")
    key = auth.partition(" ")[2].strip() or request.form.get("api_key", "") or request.form.get("key", "")
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "ip:" + (request.remote_addr or "unknown")


csrf = CSRFProtect()
limiter = Limiter(key_func=_rate_key, default_limits=[], headers_enabled=True)
