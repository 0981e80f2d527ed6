"""Akismet's form fields mapped onto Bouncer's comment model (``CommentIn``), so both APIs share one decision path.

Every field Akismet documents is read; anything else (WordPress sends its whole ``$_SERVER`` as ``HTTP_*`` and
``POST_*``) is ignored rather than refused, as Akismet does. Fields the native model has no column for are kept in
the comment's ``meta``.

The form arrives decoded by Werkzeug as UTF-8, whatever ``blog_charset`` says. In a urlencoded body a percent-escape
that is not part of valid UTF-8 (``%FF``, a Latin-1 blog's ``%E9``) stays as the escape's text, in upper case;
unescaped bytes that are not UTF-8 leave the whole form empty (the views answer ``invalid``, saying the body is not
UTF-8, before any field is looked for); in multipart, such bytes are U+FFFD. docs/akismet.md ("Encoding") says the
same to clients.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from werkzeug.datastructures import MultiDict

from service.api.schemas import MAX_META_BYTES, CommentIn
from service.ips import canonical_ip

# Akismet's own spellings of true/false for is_test (its docs and clients use all of these).
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_CONTEXT_KEY = re.compile(r"^comment_context(?:\[\d*\])?$")
# Fields the visitor (a browser, or a spammer's script) supplies: cut to the column size instead of refusing, since
# "invalid" is what Akismet says of a bad key: a spammer's 600-character name made the PyPI client report an
# invalid API key and left the comment unchecked.
_TRUNCATED = {
    "user_agent": 1000,
    "referrer": 2000,
    "comment_author": 500,
    "comment_author_email": 320,
    "comment_author_url": 2000,
}
_META_STRING_MAX = 500
# NUL (PostgreSQL cannot store it) and lone surrogates (no character; UTF-8 cannot encode them): replaced, not refused.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTEXT_MAX_ITEMS = 16

# Every request field Akismet documents (comment-check, submit-spam, submit-ham, verify-key).
DOCUMENTED_FIELDS = frozenset(
    {
        "api_key", "key", "blog", "user_ip", "user_agent", "referrer", "permalink", "comment_type",
        "comment_author", "comment_author_email", "comment_author_url", "comment_content", "comment_date_gmt",
        "comment_post_modified_gmt", "comment_parent", "comment_context", "blog_lang", "blog_charset",
        "user_role", "is_test", "recheck_reason", "honeypot_field_name",
    }
)  # fmt: skip

# Where each Akismet field lands in CommentIn, for error messages that name the field the client sent.
_FIELD_OF_PATH = {
    "content": "comment_content",
    "author.name": "comment_author",
    "author.email": "comment_author_email",
    "author.url": "comment_author_url",
    "author.ip": "user_ip",
    "author.user_agent": "user_agent",
    "post.url": "permalink",
    "type": "comment_type",
    "parent_external_id": "comment_parent",
    "lang": "blog_lang",
    "created_at": "comment_date_gmt",
    "referrer": "referrer",
    "honeypot": "honeypot_field_name",
    "meta": "comment_context",
}


class AkismetFormError(ValueError):
    """A field is missing or malformed; answered as ``invalid`` with the message in ``X-akismet-debug-help``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class AkismetComment:
    """A parsed comment-check / submit-spam / submit-ham request."""

    blog: str
    comment: CommentIn
    is_test: bool
    guid: str


def _storable(value: str) -> str:
    return _UNSTORABLE.sub("\ufffd", value)


def _text(form: MultiDict[str, str], name: str) -> str:
    """A field's text; NUL and lone surrogates (which cannot be stored) become U+FFFD."""
    value = form.get(name)
    return "" if value is None else _storable(str(value))


def parse_bool(raw: str, field: str = "is_test") -> bool:
    """Akismet's booleans: 1/0, true/false in any case; anything else is an error naming the field."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise AkismetFormError(field, f'Invalid "{field}" value: expected 1, 0, true or false')


def parse_gmt(raw: str) -> datetime | None:
    """Akismet dates: ISO 8601 (``2024-05-01T12:00:00Z``), MySQL style (``2024-05-01 12:00:00``) or a Unix time.

    A date without a zone is GMT, as the field names say. None when empty or unreadable: a date only informs
    scoring, so a blog's odd format must not cost it the check.
    """
    value = raw.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # int() also reads '١٧١٤', which no blog sends as a time
        try:
            return datetime.fromtimestamp(int(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: past year 9999 (or before 1) once in UTC
        return None


def _client_ip(raw: str) -> str:
    """The first address of ``user_ip`` (proxies send ``a, b``), canonical; empty when it is not an IP address or
    has a zone ID (Akismet takes any value: the request is not refused, the raw value is kept in ``meta``)."""
    try:
        return canonical_ip(raw.split(",", 1)[0])
    except ValueError:
        return ""


def _comment_context(form: MultiDict[str, str]) -> list[str]:
    """``comment_context[]`` (PHP arrays), ``comment_context[0]`` or a plain repeated ``comment_context``."""
    values: list[str] = []
    for key in form.keys():
        if _CONTEXT_KEY.match(key):
            values.extend(_storable(str(v)) for v in form.getlist(key) if str(v).strip())
    return [v[:_META_STRING_MAX] for v in values[:_CONTEXT_MAX_ITEMS]]


def _fit_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Keep meta within the model's size cap by dropping trailing context entries (the least useful part)."""

    def size(value: Mapping[str, Any]) -> int:
        return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))

    context: list[str] = list(meta.get("comment_context", []))
    while size(meta) > MAX_META_BYTES and context:
        context.pop()
        if context:
            meta["comment_context"] = context
        else:
            meta.pop("comment_context", None)
    return meta


def _first(form: MultiDict[str, str], names: Sequence[str]) -> str:
    for name in names:
        value = _text(form, name)
        if value:
            return value
    return ""


def parse_comment(form: MultiDict[str, str], *, require_ip: bool = True) -> AkismetComment:
    """Map an Akismet form onto ``CommentIn``; raises ``AkismetFormError`` naming the offending field."""
    blog = _text(form, "blog").strip()
    if not blog:
        raise AkismetFormError("blog", 'Empty "blog" value')
    raw_ip = _text(form, "user_ip")
    if require_ip and not raw_ip.strip():
        raise AkismetFormError("user_ip", 'Empty "user_ip" value')
    is_test = parse_bool(_text(form, "is_test"))

    meta: dict[str, Any] = {"blog": blog[:_META_STRING_MAX]}
    ip = _client_ip(raw_ip)
    if raw_ip.strip() and not ip:
        meta["user_ip"] = raw_ip.strip()[:_META_STRING_MAX]  # kept for moderators; not usable by IP rules
    for name in (
        "user_role",
        "blog_charset",
        "recheck_reason",
        "comment_post_modified_gmt",
        "honeypot_field_name",
    ):
        value = _text(form, name).strip()
        if value:
            meta[name] = value[:_META_STRING_MAX]
    blog_lang = _text(form, "blog_lang").strip()
    if blog_lang:
        meta["blog_lang"] = blog_lang[:_META_STRING_MAX]
    context = _comment_context(form)
    if context:
        meta["comment_context"] = context

    honeypot = ""
    honeypot_field = _text(form, "honeypot_field_name").strip()
    if honeypot_field and honeypot_field not in DOCUMENTED_FIELDS:  # never read a real field as the trap
        honeypot = _text(form, honeypot_field)

    date_raw = _text(form, "comment_date_gmt")
    created_at = parse_gmt(date_raw)
    if date_raw.strip() and created_at is None:
        meta["comment_date_gmt"] = date_raw.strip()[:_META_STRING_MAX]

    body: dict[str, Any] = {
        "content": _text(form, "comment_content"),
        "author": {
            "name": _text(form, "comment_author")[: _TRUNCATED["comment_author"]],
            "email": _text(form, "comment_author_email").strip()[: _TRUNCATED["comment_author_email"]],
            "url": _text(form, "comment_author_url").strip()[: _TRUNCATED["comment_author_url"]],
            "ip": ip,
            "user_agent": _text(form, "user_agent")[: _TRUNCATED["user_agent"]],
        },
        "post": {"url": _text(form, "permalink").strip()},
        # discourse sends content_type where everyone else sends comment_type
        "type": _first(form, ("comment_type", "content_type")).strip() or "comment",
        "parent_external_id": _text(form, "comment_parent").strip() or None,
        # blog_lang may be a list ("en_us, fr_ca"): the first one is the comment's most likely language
        "lang": blog_lang.split(",", 1)[0].strip()[:40],
        "created_at": created_at,
        "referrer": _first(form, ("referrer", "referer"))[: _TRUNCATED["referrer"]],
        "honeypot": honeypot,
        "meta": _fit_meta(meta),
    }
    if body["parent_external_id"] in ("0",):  # WordPress sends 0 for a top-level comment
        body["parent_external_id"] = None
    try:
        comment = CommentIn.model_validate(body)
    except ValidationError as exc:
        raise _form_error(exc) from exc
    return AkismetComment(blog=blog, comment=comment, is_test=is_test, guid=_text(form, "guid").strip())


def _form_error(exc: ValidationError) -> AkismetFormError:
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    field = _FIELD_OF_PATH.get(path, path)
    if first["type"] == "string_too_long":
        limit = (first.get("ctx") or {}).get("max_length")
        return AkismetFormError(field, f'"{field}" is too long (at most {limit} characters)')
    return AkismetFormError(field, f'Invalid "{field}" value: {first["msg"]}')
