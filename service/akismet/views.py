"""Akismet-compatible endpoints: Akismet's form fields, plain-text answers and ``X-akismet-*`` headers.

Errors answer like Akismet does (HTTP 200, body ``invalid``, the reason in ``X-akismet-debug-help``), because
Akismet clients read the body, not the status. Only rate limiting answers with a status (429 + Retry-After).
"""

from __future__ import annotations

import hashlib
import json

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge, TooManyRequests

from service.akismet.checking import StoredDecision, decide_within, warm_models
from service.akismet.forms import AkismetComment, AkismetFormError, parse_comment
from service.akismet.stats import DEFAULT_STATS_PERIOD, get_stats, usage_limit
from service.comments import insert_comment, store_comment
from service.config import settings
from service.db import session_scope
from service.extensions import body_refused, retry_after_seconds
from service.human_decisions import apply_label
from service.models import Comment, Decision, Site, parse_id
from service.sites import site_by_akismet_key

bp = Blueprint("akismet", __name__)

THANKS = "Thanks for making the web a better place."
AKISMET_KEY_LENGTH = 12


@bp.before_request
def _warm_in_this_process() -> None:
    # Only in processes that serve requests: a thread started at app creation would also run in the Celery
    # worker's parent and deadlock its forked pool children. A no-op after the first call.
    warm_models()


@bp.before_request
def _form_body_is_utf8() -> None:
    """``invalid``, saying why, for a form body that is not UTF-8: Werkzeug drops such a form whole, and the answer
    was then about the first field found missing (``Empty "api_key" value``), which sent clients after their key."""
    if request.mimetype != "application/x-www-form-urlencoded":
        return  # multipart bodies keep their fields (undecodable bytes become U+FFFD)
    try:
        request.get_data(cache=True).decode()
    except UnicodeDecodeError as exc:
        raise AkismetFormError(
            "body",
            f"The request body is not valid UTF-8 form data (byte {exc.start}): send the fields UTF-8 encoded and "
            "percent-escaped, as application/x-www-form-urlencoded",
        ) from None


def _text(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, mimetype="text/plain", headers=headers or {})


def _invalid(message: str) -> Response:
    return _text("invalid", headers={"X-akismet-debug-help": message})


@bp.errorhandler(AkismetFormError)
def _form_error(exc: AkismetFormError) -> Response:
    return _invalid(exc.message)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge) -> Response:
    return _invalid(exc.description or f"The request body is larger than {settings().max_body_bytes} bytes")


@bp.errorhandler(TooManyRequests)
def _rate_limited(_exc: TooManyRequests) -> Response:
    retry_after = retry_after_seconds()
    return _text(
        f"Too many requests for this key: retry after {retry_after} seconds.",
        status=429,
        headers={"Retry-After": str(retry_after)},
    )


def host_key(host: str) -> str:
    """The key in the first label of the Host header (``KEY.bouncer.example``), as the npm client sends it."""
    if host.startswith("["):  # an IPv6 literal carries no key
        return ""
    labels = host.rsplit(":", 1)[0].split(".") if host.count(":") <= 1 else []
    if len(labels) >= 2 and len(labels[0]) == AKISMET_KEY_LENGTH and labels[0].isalnum():
        return labels[0].lower()
    return ""


def request_key() -> str:
    """The Akismet key: form or query ``api_key``, then ``key``, then the Host header's first label.

    Not the form of a body refused as too large (the rate limiter asks before the 413): the query and Host only.
    """
    form = {} if body_refused() else request.form
    for name in ("api_key", "key"):
        value = str(form.get(name) or request.args.get(name) or "").strip()
        if value:
            return value
    return host_key(request.host)


def _site(session: Session) -> Site:
    key = request_key()
    if not key:
        raise AkismetFormError("api_key", 'Empty "api_key" value')
    site = site_by_akismet_key(session, key) if len(key) == AKISMET_KEY_LENGTH else None
    if site is None:
        raise AkismetFormError("api_key", "The API key is not valid (an Akismet key of a Bouncer site: 12 characters)")
    return site


@bp.post("/1.1/verify-key")
def verify_key() -> Response:
    """``valid`` when the key belongs to an active site and a blog URL is given, else ``invalid``."""
    with session_scope() as session:
        _site(session)
    if not str(request.form.get("blog") or request.args.get("blog") or "").strip():
        return _invalid('Empty "blog" value')
    return _text("valid")


def check_answer(outcome: StoredDecision, hold_is_spam: bool) -> Response:
    """approve → ``false``; reject → ``true`` + discard; hold (or still pending) → the site's choice."""
    headers = {"X-akismet-guid": str(outcome.comment_id), "X-bouncer-decision": outcome.decision or outcome.status}
    if outcome.decision == Decision.REJECT:
        headers["X-akismet-pro-tip"] = "discard"
        return _text("true", headers=headers)
    if outcome.decision == Decision.APPROVE:
        return _text("false", headers=headers)
    # A held comment waits in Bouncer's own queue either way; the site decides what the blog shows meanwhile.
    return _text("true" if hold_is_spam else "false", headers=headers)


@bp.post("/1.1/comment-check")
def comment_check() -> Response:
    """Store the comment, decide it within the Akismet budget, answer ``true`` (spam) or ``false`` (ham)."""
    with session_scope() as session:
        site = _site(session)
        parsed = parse_comment(request.form)
        comment_id, created = insert_comment(session, site.id, parsed.comment, source="akismet", is_test=parsed.is_test)
        hold_is_spam = site.akismet_hold_is_spam
    outcome = decide_within(comment_id, settings().akismet_wait_ms, enqueue=created)
    return check_answer(outcome, hold_is_spam)


def _submitted_comment(session: Session, site: Site, parsed: AkismetComment) -> Comment | None:
    """The comment a submit-spam/ham is about: by ``guid`` when sent, else by content + author + IP.

    A submission marked ``is_test`` only ever touches test comments, so it can never train the models.
    """
    conditions = [Comment.site_id == site.id]
    if parsed.is_test:
        conditions.append(Comment.is_test.is_(True))
    if parsed.guid:
        comment_id = parse_id(parsed.guid)  # Bouncer's guids are comment ids
        if comment_id is None:
            return None
        return session.scalars(select(Comment).where(Comment.id == comment_id, *conditions)).first()
    data = parsed.comment
    return session.scalars(
        select(Comment)
        .where(
            *conditions,
            Comment.author_ip == data.author.ip,
            Comment.author_name == data.author.name,
            Comment.content == data.content,
        )
        .order_by(Comment.id.desc())
        .limit(1)
    ).first()


REPORTED_PREFIX = "akismet-report:"


def _reported_external_id(parsed: AkismetComment) -> str:
    """The external id of a comment stored by a submit-spam/ham that found none: a digest of what the report says,
    so that two reports of it at once store one comment (the second insert meets the first's external id).

    Made of what the retention purge keeps (content, author name, post, the blog's own guid), not of the IP or the
    e-mail it erases: a report after the erasure finds the same comment by it. Two comments alike in all of those
    on one post are taken for one.
    """
    data = parsed.comment
    parts = [parsed.is_test, parsed.guid, data.content, data.author.name, data.post.url]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()
    return REPORTED_PREFIX + digest[:40]


def _submit(label: str) -> Response:
    with session_scope() as session:
        site = _site(session)
        parsed = parse_comment(request.form)
        comment = _submitted_comment(session, site, parsed)
        for _ in range(2):
            if comment is None:
                data = parsed.comment.model_copy(update={"external_id": _reported_external_id(parsed)})
                comment, _created = store_comment(session, site, data, source="akismet", is_test=parsed.is_test)
            # The blog's own moderators decided, so no callback goes back to it. A repeated report (a retry, or the
            # same report twice at once) is answered as the first one, without a second event.
            outcome = apply_label(
                session,
                comment,
                label,
                source="akismet",
                actor="akismet",
                action="feedback",
                notify_blog=False,
                once_per_actor=True,
            )
            if not outcome.gone:
                break
            # The retention purge deleted the comment it found (an old automatic reject) meanwhile: the report is
            # stored and labelled as one that found none, so the blog's word is kept as training data.
            comment = None
    return _text(THANKS)


@bp.post("/1.1/submit-spam")
def submit_spam() -> Response:
    """The blog says this comment is spam (a missed spam): label it, or store it labelled."""
    return _submit("spam")


@bp.post("/1.1/submit-ham")
def submit_ham() -> Response:
    """The blog says this comment is not spam (a false positive): label it, or store it labelled."""
    return _submit("ham")


@bp.route("/1.2/usage-limit", methods=["GET", "POST"])
def usage() -> Response:
    """This month's comment-checks of the key's site, in Akismet's usage-limit shape."""
    with session_scope() as session:
        return jsonify(usage_limit(session, _site(session)))


@bp.route("/1.1/get-stats", methods=["GET", "POST"])
def stats() -> Response:
    """Spam, ham, missed spam, false positives and accuracy of the key's site, in Akismet's get-stats shape."""
    period = str(request.form.get("from") or request.args.get("from") or DEFAULT_STATS_PERIOD)
    with session_scope() as session:
        return jsonify(get_stats(session, _site(session), period))
