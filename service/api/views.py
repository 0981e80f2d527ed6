"""Native API v1: validate, persist, enqueue, wait for the decision; no model code here."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import BaseModel, ValidationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service import queue, redis_bus
from service.api.openapi import openapi_document
from service.api.schemas import CommentIn, FeedbackIn, PersonalDataExportIn, PersonalDataIn
from service.comments import insert_comment
from service.config import settings
from service.db import database_error_reason, new_session, session_scope
from service.errors import ApiError, error_response
from service.human_decisions import apply_label
from service.models import Comment, Site
from service.personal_data import erase, export_page
from service.sites import site_by_api_key, site_id_by_api_key
from service.views import comment_view

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)

_Body = TypeVar("_Body", bound=BaseModel)
# ASCII digits only: str.isdigit() also takes '²' or '٣', and a 5000-digit value makes int() raise.
_WAIT_MS = re.compile(r"[0-9]{1,9}")


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.field)


def _bearer_key() -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "send the site's API key as 'Authorization: Bearer <key>'")
    return key.strip()


def _authenticated_site(session: Session) -> Site:
    site = site_by_api_key(session, _bearer_key())
    if site is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    return site


def _authenticated_site_id(session: Session) -> int:
    """The hot path's lookup: the site id only, from a short per-process cache."""
    site_id = site_id_by_api_key(session, _bearer_key())
    if site_id is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    return site_id


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); PostgreSQL refuses them in a json column, which was a 500.
    raise ValueError(f"{name} is not a JSON value")


class _NumberOutOfRange(ValueError):
    pass


def _finite_float(literal: str) -> float:
    # 1e400 is valid JSON grammar but parses to inf: stored in meta it was written back as Infinity, which is not JSON
    # (PostgreSQL refused the insert, a 500; SQLite kept it).
    value = float(literal)
    if not math.isfinite(value):
        raise _NumberOutOfRange(
            f"the body has a number out of range: {literal[:40]} (with a fraction or exponent: at most ±1.8e308)"
        )
    return value


def _json_body() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = request.get_data(cache=True)  # its size was checked before the view (app._whole_body)
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NumberOutOfRange as exc:
        raise ApiError(400, "bad_json", str(exc)) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[..." deeper than the parser's stack: a client error, not a 500
        raise ApiError(400, "bad_json", "the body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    unknown = [".".join(str(p) for p in e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    if unknown:  # named even when another field is also wrong: a misspelt key is the likelier mistake to report
        return ApiError(
            422,
            "unknown_field",
            f"unknown field(s): {', '.join(unknown)}; put free-form data in 'meta'",
            unknown[0],
        )
    if first["type"] == "missing":
        return ApiError(422, "missing_field", f"'{field}' is required", field)
    return ApiError(422, "invalid_field", f"'{field}': {first['msg']}", field)


def _validated_body(model: type[_Body]) -> _Body:
    """The JSON body, validated; authenticate before calling this: no validation details for unknown clients."""
    body = _json_body()
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from exc


def _wait_budget() -> int:
    raw = request.args.get("wait")
    cfg = settings()
    if raw is None:
        return cfg.wait_default_ms
    if not _WAIT_MS.fullmatch(raw) or int(raw) > cfg.wait_max_ms:
        raise ApiError(400, "invalid_parameter", f"wait must be an integer from 0 to {cfg.wait_max_ms}", "wait")
    return int(raw)


def _answer(view: dict[str, Any]) -> Response:
    """200 with the decision, or 202 with a link to poll while it is pending."""
    if view["status"] == "decided":
        return jsonify(view)
    location = url_for("api.get_comment", comment_id=view["id"])
    response = jsonify({**view, "links": {"self": location}})
    response.status_code = 202
    response.headers["Location"] = location
    response.headers["Retry-After"] = "1"
    return response


@bp.post("/comments")
def create_comment() -> Response:
    """Accept a comment: it is stored before any 2xx, then scored by a worker within the wait budget."""
    with session_scope() as session:  # authenticate first: no validation details for unknown clients
        site_id = _authenticated_site_id(session)
    budget = _wait_budget()
    data = _validated_body(CommentIn)
    with session_scope() as session:
        comment_id, created = insert_comment(session, site_id, data)
        if created:
            view: dict[str, Any] = {"id": comment_id, "external_id": data.external_id, "status": "pending"}
        else:
            stored = session.get(Comment, comment_id)
            assert stored is not None
            view = comment_view(stored)
    if view["status"] == "pending":
        if created:
            queue.enqueue_score([comment_id])
        try:
            notified = redis_bus.wait_decided(comment_id, budget)
        except Exception:  # Redis down: the comment is stored and pending; the sweeper finishes it
            current_app.logger.warning("could not wait for comment %s", comment_id, exc_info=True)
            notified = None
        if notified is not None:
            view = notified
        elif budget > 0:
            view = _current_view(comment_id)
    return _answer(view)


def _current_view(comment_id: int) -> dict[str, Any]:
    session = new_session()
    try:
        comment = session.get(Comment, comment_id)
        assert comment is not None
        return comment_view(comment)
    finally:
        session.close()


def _site_comment(session: Session, site: Site, comment_id: int) -> Comment:
    comment = session.scalars(select(Comment).where(Comment.id == comment_id, Comment.site_id == site.id)).first()
    if comment is None:  # the same answer whether it does not exist or belongs to another site
        raise ApiError(404, "not_found", "no such comment")
    return comment


@bp.get("/comments/<int:comment_id>")
def get_comment(comment_id: int) -> Response:
    """The comment's current status and decision."""
    with session_scope() as session:
        site = _authenticated_site(session)
        return jsonify(comment_view(_site_comment(session, site, comment_id)))


@bp.post("/comments/<int:comment_id>/feedback")
def comment_feedback(comment_id: int) -> Response:
    """The blog's own moderators labelled the comment: spam, ham or abuse."""
    with session_scope() as session:
        _authenticated_site(session)  # authenticate first: no validation details for unknown clients
    data = _validated_body(FeedbackIn)
    with session_scope() as session:
        site = _authenticated_site(session)
        comment = _site_comment(session, site, comment_id)
        # A retried report (the same label again) is answered as the first one, without a second event or label.
        outcome = apply_label(
            session,
            comment,
            data.label,
            source="blog",
            actor="blog",
            action="feedback",
            notify_blog=False,
            once_per_actor=True,
        )
        if outcome.gone:  # the retention purge deleted it meanwhile: as if it had been gone before the request
            raise ApiError(404, "not_found", "no such comment")
        view = comment_view(comment)
    return jsonify({"label": data.label, "comment": view})


@bp.post("/personal-data/export")
def export_personal_data() -> Response:
    """A commenter's request for their data: what the site's comments from this e-mail address hold, a page of
    ``EXPORT_PAGE_SIZE`` at a time (``done``: the last page)."""
    with session_scope() as session:
        _authenticated_site(session)
    data = _validated_body(PersonalDataExportIn)
    with session_scope() as session:
        site = _authenticated_site(session)
        comments, done = export_page(session, site.id, data.email, data.page)
    return jsonify({"comments": comments, "done": done})


@bp.post("/personal-data/erase")
def erase_personal_data() -> Response:
    """A commenter's request to be forgotten: their personal data is erased from the site's comments."""
    with session_scope() as session:
        _authenticated_site(session)
    data = _validated_body(PersonalDataIn)
    with session_scope() as session:
        site = _authenticated_site(session)
        erased = erase(session, site.id, data.email)
    return jsonify({"erased": erased})


@bp.get("/health")
def health() -> Response:
    """Liveness: the web process answers."""
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready() -> Response:
    """Readiness: database, Redis, a live scoring worker and loaded models."""
    checks: dict[str, Any] = {}
    try:
        from service.migrate import schema_problem

        with session_scope() as session:
            session.execute(text("SELECT 1"))
            # reachable is not enough: a database without the schema fails every request
            problem = schema_problem(session)
        checks["database"] = f"error: {problem}" if problem else "ok"
    except Exception as exc:  # report, don't crash: this endpoint exists to say what is wrong
        checks["database"] = f"error: {database_error_reason(exc)}"
    checks["redis"] = "ok" if redis_bus.ping() else "error: unreachable"
    checks["worker"] = "ok" if _scoring_worker_alive() else "error: no live worker on the score queue"
    checks["models"] = _model_checks()
    models_ok = not any(v.startswith("error: ") for v in checks["models"].values())
    ok = all(v == "ok" for k, v in checks.items() if k != "models") and models_ok
    response = jsonify({"status": "ready" if ok else "not_ready", "checks": checks})
    response.status_code = 200 if ok else 503
    return response


# The error last logged per model kind: load balancers poll /ready every few seconds, the log gets a failure once.
_logged_model_errors: dict[str, str] = {}
_logged_model_errors_lock = threading.Lock()


def _model_checks() -> dict[str, str]:
    """Each kind's active model version, or that it failed to load. The answer needs no key, so it says no more;
    the exception (paths in the models directory, a manifest's contents) goes to the log, once until it changes."""
    from classifiers import KINDS
    from service.scoring import registry

    checks: dict[str, str] = {}
    for kind in KINDS:
        try:
            checks[kind] = registry().active(kind).version
        except Exception as exc:  # a missing or broken model makes the service not ready
            checks[kind] = f"error: {kind} model failed to load; see the log"
            detail = f"{type(exc).__name__}: {exc}"
            with _logged_model_errors_lock:
                first = _logged_model_errors.get(kind) != detail
                _logged_model_errors[kind] = detail
            if first:
                log.error("readiness: the active %s model failed to load: %s", kind, detail, exc_info=exc)
        else:
            with _logged_model_errors_lock:
                _logged_model_errors.pop(kind, None)  # loads again: a new failure is logged anew
    return checks


def _scoring_worker_alive() -> bool:
    """A live worker consumes the score queue (a retrain-only worker answering is not enough to decide comments)."""
    celery_app = current_app.extensions["celery"]
    try:
        replies = celery_app.control.inspect(timeout=0.5).active_queues() or {}
    except Exception:  # the broker is down: no worker can be reached either
        return False
    return any(q.get("name") == "score" for queues in replies.values() for q in queues or [])


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi_document())
