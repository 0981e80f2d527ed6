"""Flask extensions, created once and attached with ``init_app``."""

from __future__ import annotations

import hashlib
import logging
import time

from flask import g, request
from flask_limiter import Limiter
from flask_wtf import CSRFProtect

log = logging.getLogger(__name__)


def client_ip_key() -> str:
    """Limit per client IP whatever the request carries: for the login form, where an Authorization header (the
    API's per-key bucket) would let every guess come with a fresh key and so a fresh limit."""
    return "ip:" + (request.remote_addr or "unknown")


def _rate_key() -> str:
    """Limit per API key where a valid one is sent (so one noisy site cannot starve another), else per client IP.

    Never raises: flask-limiter takes any error in a key function for its Redis being down and counts every limit of
    the process in its own memory from then on. A key that cannot be looked up (the database is down) is limited
    per client IP instead.
    """
    try:
        return _site_or_client_key()
    except Exception as exc:
        from service.db import DATABASE_UNAVAILABLE, database_error_reason

        message = "rate limit: could not tell the site of the request's key; limiting per client IP"
        if isinstance(exc, DATABASE_UNAVAILABLE):  # one line per request while the database is down, no traceback
            log.warning("%s: %s", message, database_error_reason(exc))
        else:
            log.warning(message, exc_info=True)
        return client_ip_key()


def _site_or_client_key() -> str:
    """Only a key that belongs to a site gets a bucket of its own: made-up keys would each get a fresh one, and a
    client rotating them would never be limited."""
    from service.db import session_scope
    from service.sites import site_id_by_akismet_key, site_id_by_api_key

    key = request.headers.get("Authorization", "").partition(" ")[2].strip()
    lookup = site_id_by_api_key
    if not key and request.blueprint == "akismet":
        from service.akismet.views import AKISMET_KEY_LENGTH, request_key  # form, query or Host, as clients send it

        key = request_key()
        lookup = site_id_by_akismet_key
        if len(key) != AKISMET_KEY_LENGTH:
            key = ""
    if key:
        with session_scope() as session:
            known = lookup(session, key) is not None
        if known:
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return client_ip_key()


def body_refused() -> bool:
    """True while the request waits for its 413 (the body is over the limits) until the rate limiter has counted it
    (``service.app._refuse_body``): nothing may read the body meanwhile, a streamed one is cut."""
    return "refused_body" in g


def retry_after_seconds() -> int:
    """Seconds until the rate limit that was just exceeded lets requests through again (for Retry-After)."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, int(current.reset_at - time.time()))


csrf = CSRFProtect()
limiter = Limiter(key_func=_rate_key, default_limits=[])
