"""Flask extensions, created once and attached with ``init_app``."""

from __future__ import annotations

import hashlib
import time

from flask import request
from flask_limiter import Limiter
from flask_wtf import CSRFProtect


def _rate_key() -> str:
    """Limit per API key where one is sent (so one noisy site cannot starve another), else per client IP."""
    key = request.headers.get("Authorization", "").partition(" ")[2].strip()
    if not key and request.blueprint == "akismet":
        from service.akismet.views import request_key  # form, query or Host header, as Akismet clients send it

        key = request_key()
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "ip:" + (request.remote_addr or "unknown")


def retry_after_seconds() -> int:
    """Seconds until the rate limit that was just exceeded lets requests through again (for Retry-After)."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, int(current.reset_at - time.time()))


csrf = CSRFProtect()
limiter = Limiter(key_func=_rate_key, default_limits=[])
