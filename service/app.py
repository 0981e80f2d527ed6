"""The Flask application factory."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from flask import Flask, Response, current_app, g, render_template, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter, ValidationError

from service.celery_setup import celery_init_app
from service.config import settings
from service.db import DATABASE_UNAVAILABLE, database_error_reason
from service.errors import error_response
from service.extensions import csrf, limiter, retry_after_seconds
from service.metrics import init_request_metrics
from service.models import parse_id
from service.redis_bus import LIMITS_DB

# No inline script or style anywhere: the moderation UI shows hostile text all day.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Browsers keep to HTTPS for a year once they saw this over HTTPS (ignored over HTTP, and never sent there).
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"
_MACHINE_PREFIXES = ("/api/", "/1.1/", "/1.2/")
_AKISMET_PREFIXES = ("/1.1/", "/1.2/")
DATABASE_RETRY_AFTER_SECONDS = 5
_RATE_LIMITED_BLUEPRINTS = "bouncer.rate_limited_blueprints"  # app.extensions key: names of the machine APIs
_UNAVAILABLE_MESSAGE = "The database is unavailable; retry later."
# What an error page of the UI says: our own words, never the exception's description (a view or an extension may
# put request data in it) nor the request's path.
_PAGE_MESSAGES = {
    400: "The request could not be understood. Go back, reload the page and try again.",
    401: "You need to sign in to see this page.",
    403: "You are not allowed to see this page.",
    404: "There is no page at this address.",
    405: "This page cannot be used that way.",
    413: "What was sent is too large.",
    429: "Too many requests. Wait a moment and try again.",
    500: "Something went wrong on our side; it has been logged.",
}

log = logging.getLogger(__name__)

# (module with a ``bp`` blueprint, whether it is a machine API authenticated by site keys)
BLUEPRINTS: tuple[tuple[str, bool], ...] = (
    ("service.api.views", True),
    ("service.akismet", True),
    ("service.metrics", False),
    ("service.auth", False),
    ("service.moderation", False),
    ("service.admin", False),
)


class IdConverter(BaseConverter):
    """A row id in a URL, read by ``parse_id``: anything that cannot be an id (Unicode digits such as '١٢', a
    number past the 64-bit id column) does not match the route, so it is a 404, never a 500 or another row."""

    regex = "[0-9]+"  # not Werkzeug's \d+, which takes every Unicode digit
    weight = 50  # as Werkzeug's own number converters: a literal segment in the same place wins

    def to_python(self, value: str) -> int:
        parsed = parse_id(value)
        if parsed is None:
            raise ValidationError()
        return parsed

    def to_url(self, value: Any) -> str:
        return str(int(value))


def _limiter_storage_uri() -> str:
    url = settings().redis_url_for(LIMITS_DB)
    return url.replace("unix://", "redis+unix://", 1) if url.startswith("unix://") else url


def _whole_body() -> None:
    """413 for a body over the limit or a form past Werkzeug's limits, before any other hook reads the body.

    Nothing acts on a cut body: it is read once (form parsing, CSRF and the views reuse the cache); a Content-Length
    over the limit + 1 is refused by Werkzeug on this read without reading it. Left to the rate limiter's key
    function (the Akismet key is a form field), the 413 made flask-limiter take its Redis for down and count limits
    in this process's memory (each process its own count) until its next check of Redis.
    """
    limit = settings().max_body_bytes
    try:
        size = len(request.get_data(cache=True))
    except RequestEntityTooLarge:
        size = limit + 1
    if size > limit:
        _refuse_body(RequestEntityTooLarge(f"The request body is larger than {limit} bytes"))
        return
    try:
        _ = request.form  # parsed now, so that a form over Werkzeug's limits fails here and not in a later hook
    except RequestEntityTooLarge:  # more than MAX_FORM_PARTS parts in a multipart body
        _refuse_body(RequestEntityTooLarge(f"The form has more than {request.max_form_parts} parts"))


def _refuse_body(exc: RequestEntityTooLarge) -> None:
    """Raise the 413 now, or for a rate-limited machine API once the rate limiter has counted the request.

    flask-limiter counts in its own before-request hook, which an error raised in an earlier hook skips: a client
    sending only huge bodies was never limited. Such an API is CSRF-exempt and its key function reads no body marked
    refused (``service.extensions.body_refused``), so nothing reads the body before the 413 all the same.
    """
    if request.blueprint in current_app.extensions[_RATE_LIMITED_BLUEPRINTS]:
        g.refused_body = exc
        return
    raise exc


def _refused_body_after_the_limiter() -> None:
    """The 413 that ``_refuse_body`` held until the rate limiter had counted the request (and found it within)."""
    exc = g.get("refused_body")
    if exc is not None:
        raise exc


def _plain_page(code: int, title: str, message: str) -> str:
    """An error page without the layout, for when the layout itself fails (it asks the database who is signed in)."""
    return (
        f"<!doctype html>\n<html lang=en>\n<title>{code} {escape(title)}</title>\n<h1>{escape(title)}</h1>\n"
        f"<p>{escape(message)}</p>\n"
    )


def error_page(code: int, title: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The UI's error page (error.html) with ``code`` as its status; a bare page if the layout cannot render."""
    try:
        page = render_template("error.html", code=code, message=message, title=title)
    except DATABASE_UNAVAILABLE:  # an outage is logged where it is the error; one line per request, not two
        page = _plain_page(code, title, message)
    except Exception:
        log.exception("the error page of a %d could not be rendered; answering a bare one", code)
        page = _plain_page(code, title, message)
    return Response(page, status=code, mimetype="text/html", headers=headers)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings, extensions, Celery, blueprints, security headers and JSON errors."""
    cfg = settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=cfg.secret_key,
        # One byte over the limit: Werkzeug cuts a streamed (chunked) body at exactly MAX_CONTENT_LENGTH without an
        # error, so only a body read one byte past the limit can be told apart from one that fits (_whole_body).
        MAX_CONTENT_LENGTH=cfg.max_body_bytes + 1,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.secure_cookies,
        WTF_CSRF_TIME_LIMIT=None,
        RATELIMIT_STORAGE_URI=_limiter_storage_uri(),
        RATELIMIT_STORAGE_OPTIONS={"socket_timeout": 0.2, "socket_connect_timeout": 0.2},
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
        # No X-RateLimit-* headers: computing them costs a Redis round trip per request; a 429 says Retry-After.
        RATELIMIT_HEADERS_ENABLED=False,
    )
    if test_config:
        app.config.update(test_config)
    logging.basicConfig(level=cfg.log_level)

    # Every <int:...> in a URL is an id (IdConverter): Werkzeug's own takes Unicode digits and numbers of any size.
    app.url_map.converters["int"] = IdConverter
    if cfg.trusted_proxies:
        # The client's address as the proxy it connected to saw it, for the limits per client (login, requests
        # without a key): behind a proxy every client had the proxy's address, and one client's failed logins
        # locked out everyone. Only X-Forwarded-For, and only as many hops as there are proxies: an address the
        # client wrote in front of theirs is not taken. HTTPS stays gunicorn's to tell (--forwarded-allow-ips).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=cfg.trusted_proxies, x_proto=0)  # type: ignore[method-assign]
    init_request_metrics(app)  # its endpoint hook goes before every other, so refused requests are counted too
    # First of all the before-request hooks (they run in the order they are registered): CSRF and the rate limiter's
    # key function read the form, and the limiter takes any error there for its storage being down.
    app.before_request(_whole_body)
    csrf.init_app(app)
    limiter.init_app(app)
    # Right after the limiter's hook: a machine API's oversized request is counted before it is refused.
    app.before_request(_refused_body_after_the_limiter)
    celery_init_app(app)

    rate_limited: set[str] = set()
    app.extensions[_RATE_LIMITED_BLUEPRINTS] = rate_limited
    for module_name, machine_api in BLUEPRINTS:
        blueprint = importlib.import_module(module_name).bp
        if machine_api:  # called by blogs with keys, not by browsers with cookies: no CSRF, rate-limited
            limiter.limit(cfg.api_rate_limit)(blueprint)
            csrf.exempt(blueprint)
            rate_limited.add(blueprint.name)
        app.register_blueprint(blueprint)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.is_secure:  # TLS to gunicorn, or X-Forwarded-Proto from a proxy gunicorn trusts (README: HTTPS)
            response.headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
        if not request.path.startswith("/static/") or response.status_code >= 400:
            # Pages and answers carry comments, API keys and one-time passwords: no copy in a browser or proxy cache.
            # Nor of an error page under /static/: it is the layout with its session cookie and CSRF token.
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        """JSON errors for the machine APIs, our own page (layout, CSP) for the UI; both keep the status."""
        status = exc.code or 500
        headers: dict[str, str] = {}
        if status == 429:
            headers["Retry-After"] = str(retry_after_seconds())
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)  # a 405 must say what the resource accepts
        if not request.path.startswith(_MACHINE_PREFIXES):
            message = _PAGE_MESSAGES.get(status) or _PAGE_MESSAGES[500 if status >= 500 else 400]
            return error_page(status, exc.name, message, headers)
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            429: "rate_limited",
            500: "internal_error",
        }.get(status, "http_error")
        response = error_response(status, code, exc.description or exc.name)
        response.headers.update(headers)
        return response

    def _database_unavailable(exc: Exception) -> Response:
        """503 with Retry-After, not a 500 and a traceback per request: the request may be retried as it is."""
        log.error("database unavailable for %s %s: %s", request.method, request.path, database_error_reason(exc))
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        if request.path.startswith(_AKISMET_PREFIXES) or request.path == "/metrics":
            # Akismet clients read text (any non-200 is "try later"). /metrics leaves an outage out of its answer
            # (bouncer_database_up 0); should anything else there fail so, Prometheus marks the scrape failed.
            return Response(_UNAVAILABLE_MESSAGE, status=503, mimetype="text/plain", headers=headers)
        if request.path.startswith(_MACHINE_PREFIXES):
            response = error_response(503, "database_unavailable", _UNAVAILABLE_MESSAGE)
            response.headers.update(headers)
            return response
        return error_page(503, "Service Unavailable", _UNAVAILABLE_MESSAGE, headers)

    for exc_class in DATABASE_UNAVAILABLE:
        app.register_error_handler(exc_class, _database_unavailable)
    return app
