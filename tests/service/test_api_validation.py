"""Validation, auth and idempotency of the native API (through the Flask test client, no worker needed)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from service.admin.views import list_value
from service.config import settings
from service.db import session_scope
from service.decisions.engine import decide_pending
from service.models import Comment, ListEntry
from tests.conftest import make_site, post_comment


def _count(site_id: int) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Comment).where(Comment.site_id == site_id)) or 0)


def _post_text(client: Any, site: dict[str, Any], body: str) -> Any:
    """POST a JSON body written by hand (what json.dumps cannot write: bad numbers, lone surrogates, ...)."""
    headers = {"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"}
    return client.post("/api/v1/comments?wait=0", data=body, headers=headers)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# Valid ISO 8601 times that fall outside years 1..9999 once converted to UTC (an OverflowError, a 500, before).
PAST_9999, BEFORE_1 = "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00"

BAD_BODIES: list[tuple[str, Any, int, str, str | None]] = [
    ("missing content", {"author": {"name": "a"}}, 422, "missing_field", "content"),
    ("content wrong type", {"content": 12}, 422, "invalid_field", "content"),
    ("content too long", {"content": "x" * 32_001}, 422, "invalid_field", "content"),
    ("unknown top-level key", {"content": "hi", "colour": "red"}, 422, "unknown_field", "colour"),
    ("unknown nested key", {"content": "hi", "author": {"name": "a", "age": 3}}, 422, "unknown_field", "author.age"),
    # the unknown key is named even when an earlier field is wrong too (it was reported as that field's error only)
    ("unknown key after a bad one", {"content": 12, "colour": "red"}, 422, "unknown_field", "colour"),
    ("misspelt required key", {"contnet": "hi"}, 422, "unknown_field", "contnet"),
    ("author not an object", {"content": "hi", "author": "bob"}, 422, "invalid_field", "author"),
    ("bad ip", {"content": "hi", "author": {"ip": "999.1.1.1"}}, 422, "invalid_field", "author.ip"),
    ("ip with a zone id", {"content": "hi", "author": {"ip": "fe80::1%eth0"}}, 422, "invalid_field", "author.ip"),
    ("bad date", {"content": "hi", "created_at": "yesterday"}, 422, "invalid_field", "created_at"),
    ("date past 9999 in UTC", {"content": "hi", "created_at": PAST_9999}, 422, "invalid_field", "created_at"),
    ("date before 1 in UTC", {"content": "hi", "created_at": BEFORE_1}, 422, "invalid_field", "created_at"),
    (
        "published past 9999",
        {"content": "hi", "post": {"published_at": PAST_9999}},
        422,
        "invalid_field",
        "post.published_at",
    ),
    ("meta too big", {"content": "hi", "meta": {"k": "v" * 5000}}, 422, "invalid_field", "meta"),
    ("meta not an object", {"content": "hi", "meta": [1, 2]}, 422, "invalid_field", "meta"),
    ("meta nested too deep", {"content": "hi", "meta": {"a": _nested(16)}}, 422, "invalid_field", "meta"),
    ("NUL in text", {"content": "a\x00b"}, 422, "invalid_field", "content"),
    # json.dumps writes these as "\ud800": valid JSON, but no character; storing one was a 500 (UnicodeEncodeError).
    ("lone surrogate in content", {"content": "a\ud800b"}, 422, "invalid_field", "content"),
    ("lone surrogate in author", {"content": "hi", "author": {"name": "\udc00"}}, 422, "invalid_field", "author.name"),
    ("lone surrogate in post", {"content": "hi", "post": {"title": "x\udbff"}}, 422, "invalid_field", "post.title"),
    ("lone surrogate in external id", {"content": "hi", "external_id": "\ud800"}, 422, "invalid_field", "external_id"),
    ("lone surrogate in meta value", {"content": "hi", "meta": {"a": [{"b": "\ud800"}]}}, 422, "invalid_field", "meta"),
    ("lone surrogate in meta key", {"content": "hi", "meta": {"k\udfff": 1}}, 422, "invalid_field", "meta"),
    ("empty external id", {"content": "hi", "external_id": ""}, 422, "invalid_field", "external_id"),
    ("array body", [1, 2], 400, "bad_json", None),
]


@pytest.mark.parametrize(("case", "body", "status", "code", "field"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_invalid_bodies_are_refused_and_nothing_is_stored(
    client: Any, site: dict[str, Any], case: str, body: Any, status: int, code: str, field: str | None
) -> None:
    response = post_comment(client, site["api_key"], body, wait=0)
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error.get("field") == field
    assert error["message"]
    assert _count(site["id"]) == 0


def test_bad_json_is_400(client: Any, site: dict[str, Any]) -> None:
    response = client.post(
        "/api/v1/comments",
        data="{not json",
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_json"


@pytest.mark.parametrize("depth", [1_000, 30_000])
def test_json_nested_deeper_than_the_parser_is_400(client: Any, site: dict[str, Any], depth: int) -> None:
    # 30 000 levels fit in 64 KiB; json.loads then raises RecursionError, which is not a ValueError.
    body = '{"content": "hi", "meta": {"a": ' + "[" * depth + "]" * depth + "}}"
    response = _post_text(client, site, body)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"]["code"] == "bad_json"
    assert _count(site["id"]) == 0


def test_meta_nested_to_the_limit_is_stored(client: Any, site: dict[str, Any]) -> None:
    meta = {"a": _nested(15)}
    response = post_comment(client, site["api_key"], {"content": "hi", "meta": meta}, wait=0)
    assert response.status_code == 202, response.get_json()
    with session_scope() as session:
        stored = session.get(Comment, response.get_json()["id"])
        assert stored is not None and stored.meta == meta


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_400(client: Any, site: dict[str, Any], constant: str) -> None:
    # Python's json reads them, but they are not JSON; stored in meta they made PostgreSQL fail the insert (500).
    response = _post_text(client, site, '{"content": "hi", "meta": {"score": ' + constant + "}}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_json" and constant.lstrip("-") in error["message"]
    assert _count(site["id"]) == 0


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1E+999", "0.5e309", "[1, 2e308]"])
def test_numbers_out_of_range_are_400(client: Any, site: dict[str, Any], number: str) -> None:
    # Python's json reads them as inf: stored in meta that became Infinity (PostgreSQL refused the insert, a 500).
    response = _post_text(client, site, '{"content": "hi", "meta": {"score": ' + number + "}}")
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "bad_json" and "out of range" in error["message"]
    assert _count(site["id"]) == 0


def test_large_but_finite_numbers_are_kept(client: Any, site: dict[str, Any]) -> None:
    meta = {"big": 1.7e308, "tiny": 5e-324, "long": 10**300}
    body = '{"content": "hi", "meta": {"big": 1.7e308, "tiny": 5e-324, "long": 1' + "0" * 300 + "}}"
    response = _post_text(client, site, body)
    assert response.status_code == 202, response.get_json()
    with session_scope() as session:
        stored = session.get(Comment, response.get_json()["id"])
        assert stored is not None and stored.meta == meta


def test_a_lone_surrogate_in_meta_is_named_by_its_path(client: Any, site: dict[str, Any]) -> None:
    response = post_comment(client, site["api_key"], {"content": "hi", "meta": {"a": [{"b": "\ud800"}]}}, wait=0)
    assert response.status_code == 422
    assert "meta.a.0.b" in response.get_json()["error"]["message"]


def test_a_surrogate_pair_is_one_character_and_stored(client: Any, site: dict[str, Any]) -> None:
    body = '{"content": "nice \\ud83d\\ude00", "author": {"name": "\\ud83d\\ude00"}, "meta": {"\\ud83d\\ude00": "ok"}}'
    response = _post_text(client, site, body)
    assert response.status_code == 202, response.get_json()
    with session_scope() as session:
        stored = session.get(Comment, response.get_json()["id"])
        assert stored is not None
        assert (stored.content, stored.author_name, stored.meta) == (
            "nice \U0001f600",
            "\U0001f600",
            {"\U0001f600": "ok"},
        )


@pytest.fixture
def content_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """Set BOUNCER_MAX_CONTENT_CHARS for one test (the settings are read once per process, so re-read them)."""

    def set_limit(chars: int) -> None:
        monkeypatch.setenv("BOUNCER_MAX_CONTENT_CHARS", str(chars))
        settings.cache_clear()

    yield set_limit
    monkeypatch.undo()
    settings.cache_clear()


@pytest.mark.parametrize("limit", [100, 40_000])
def test_content_limit_is_the_setting(
    client: Any, site: dict[str, Any], content_limit: Callable[[int], None], limit: int
) -> None:
    # BOUNCER_MAX_CONTENT_CHARS was read but never used: the schema had 32 000 built in.
    content_limit(limit)
    at_limit = post_comment(client, site["api_key"], {"content": "y" * limit}, wait=0)
    assert at_limit.status_code == 202, at_limit.get_json()
    over = post_comment(client, site["api_key"], {"content": "y" * (limit + 1)}, wait=0)
    assert over.status_code == 422
    error = over.get_json()["error"]
    assert (error["code"], error["field"]) == ("invalid_field", "content")
    assert str(limit) in error["message"]
    assert _count(site["id"]) == 1


def test_non_json_is_415(client: Any, site: dict[str, Any]) -> None:
    response = client.post(
        "/api/v1/comments",
        data="content=hi",
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert _count(site["id"]) == 0


def test_oversize_body_is_413(client: Any, site: dict[str, Any]) -> None:
    body = json.dumps({"content": "hi", "meta": {"pad": "x" * 70_000}})
    response = client.post(
        "/api/v1/comments",
        data=body,
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert _count(site["id"]) == 0


def test_oversize_streamed_body_is_413_not_cut(client: Any, site: dict[str, Any]) -> None:
    # Without Content-Length (chunked), Werkzeug cut the body at 65536 bytes silently: this one then parsed as a
    # valid comment and was stored although the body was over the limit.
    body = b'{"content": "hi"}' + b" " * 70_000
    response = client.post(
        "/api/v1/comments?wait=0",
        input_stream=io.BytesIO(body),
        headers={
            "Authorization": f"Bearer {site['api_key']}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn sets for a chunked request
    )
    assert response.status_code == 413, response.get_json()
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert _count(site["id"]) == 0


def test_body_at_the_limit_is_accepted_streamed_or_not(client: Any, site: dict[str, Any]) -> None:
    prefix = b'{"content": "hi"}'
    body = prefix + b" " * (65_536 - len(prefix))
    headers = {"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"}
    sized = client.post("/api/v1/comments?wait=0", data=body, headers=headers)
    streamed = client.post(
        "/api/v1/comments?wait=0",
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert (sized.status_code, streamed.status_code) == (202, 202)


# Unicode digits ('²', Arabic-Indic '٣') pass str.isdigit(); 5000 digits make int() raise: all must be a 400, not a 500.
@pytest.mark.parametrize("wait", ["-1", "abc", "10001", "1.5", "%C2%B2", "%D9%A3", "1" * 5000, "%2B5", "%205", "5%0A"])
def test_bad_wait_is_400(client: Any, site: dict[str, Any], wait: str) -> None:
    response = client.post(
        f"/api/v1/comments?wait={wait}",
        data=json.dumps({"content": "hi"}),
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "wait"
    assert _count(site["id"]) == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer bk_wrong"}],
    ids=["missing", "empty", "wrong scheme", "wrong key"],
)
def test_auth_is_required(client: Any, site: dict[str, Any], headers: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/comments?wait=0",
        data=json.dumps({"content": "hi"}),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert _count(site["id"]) == 0


def test_another_sites_comment_is_404_like_a_missing_one(client: Any, site: dict[str, Any]) -> None:
    other = make_site(name="Other blog")
    created = post_comment(client, site["api_key"], {"content": "mine"}, wait=0)
    assert created.status_code in (200, 202)
    comment_id = created.get_json()["id"]
    auth = {"Authorization": f"Bearer {other['api_key']}"}
    foreign = client.get(f"/api/v1/comments/{comment_id}", headers=auth)
    missing = client.get("/api/v1/comments/99999999", headers=auth)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.get_json() == missing.get_json()
    feedback = client.post(f"/api/v1/comments/{comment_id}/feedback", json={"label": "spam"}, headers=auth)
    assert feedback.status_code == 404
    own = client.get(f"/api/v1/comments/{comment_id}", headers={"Authorization": f"Bearer {site['api_key']}"})
    assert own.status_code == 200
    assert own.get_json()["id"] == comment_id


def test_resubmission_with_the_same_external_id_is_idempotent(client: Any, site: dict[str, Any]) -> None:
    body = {"content": "A thoughtful comment about the post.", "external_id": "wp-123"}
    first = post_comment(client, site["api_key"], body, wait=0)
    second = post_comment(client, site["api_key"], {**body, "content": "changed"}, wait=0)
    assert first.get_json()["id"] == second.get_json()["id"]
    assert _count(site["id"]) == 1
    with session_scope() as session:
        stored = session.scalars(select(Comment).where(Comment.site_id == site["id"])).one()
        assert stored.content == body["content"]
        assert stored.enqueue_count == 0


def test_the_same_external_id_on_two_sites_is_two_comments(client: Any, site: dict[str, Any]) -> None:
    other = make_site(name="Second blog")
    a = post_comment(client, site["api_key"], {"content": "x", "external_id": "7"}, wait=0)
    b = post_comment(client, other["api_key"], {"content": "x", "external_id": "7"}, wait=0)
    assert a.get_json()["id"] != b.get_json()["id"]


def test_all_fields_are_stored(client: Any, site: dict[str, Any]) -> None:
    body = {
        "external_id": "full-1",
        "content": "Nice write-up, thanks!",
        "author": {
            "name": "Ada",
            "email": "ada@example.org",
            "url": "https://ada.example",
            "ip": "2001:db8::1",
            "user_agent": "Mozilla/5.0",
        },
        "post": {
            "url": "https://blog.example/p/1",
            "title": "On engines",
            "excerpt": "About analytical engines",
            "published_at": "2026-11-01T10:00:00Z",
        },
        "type": "reply",
        "parent_external_id": "full-0",
        "lang": "en",
        "created_at": "2026-11-02T10:00:00+02:00",
        "referrer": "https://blog.example/",
        "honeypot": "",
        "meta": {"plugin": "wp", "nested": {"a": [1, 2]}},
    }
    response = post_comment(client, site["api_key"], body, wait=0)
    assert response.status_code == 202
    assert response.headers["Location"].endswith(f"/api/v1/comments/{response.get_json()['id']}")
    with session_scope() as session:
        c = session.get(Comment, response.get_json()["id"])
        assert c is not None
        assert (c.author_name, c.author_email, c.author_url, c.author_ip) == (
            "Ada",
            "ada@example.org",
            "https://ada.example",
            "2001:db8::1",
        )
        assert (c.post_title, c.type, c.parent_external_id, c.lang) == ("On engines", "reply", "full-0", "en")
        assert c.meta == {"plugin": "wp", "nested": {"a": [1, 2]}}
        assert c.created_at is not None and c.created_at.hour in (8, 10)  # stored in UTC (SQLite drops the zone)
        # Stored pending; a worker that an earlier test left running may already have decided it.
        assert c.status in ("pending", "decided")


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client as a dual-stack server sees it
        ("::FFFF:CB00:7107", "203.0.113.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        (" 198.51.100.2 ", "198.51.100.2"),
    ],
)
def test_the_author_ip_is_stored_canonical(client: Any, site: dict[str, Any], raw: str, stored: str) -> None:
    response = post_comment(client, site["api_key"], {"content": "hi", "author": {"ip": raw}}, wait=0)
    assert response.status_code == 202, response.get_json()
    with session_scope() as session:
        comment = session.get(Comment, response.get_json()["id"])
        assert comment is not None and comment.author_ip == stored


def test_an_ip_with_a_zone_id_is_refused_saying_why(client: Any, site: dict[str, Any]) -> None:
    response = post_comment(client, site["api_key"], {"content": "hi", "author": {"ip": "fe80::1%eth0"}}, wait=0)
    assert response.status_code == 422
    assert "zone ID" in response.get_json()["error"]["message"]


def test_an_ip_rule_matches_the_ipv4_mapped_address(client: Any, site: dict[str, Any]) -> None:
    # The rule is entered as IPv4, the blog's server sends the address as IPv6 (or the other way round).
    with session_scope() as session:
        session.add(ListEntry(site_id=site["id"], action="block", kind="ip", value=list_value("ip", "203.0.113.0/24")))
        session.add(
            ListEntry(site_id=site["id"], action="allow", kind="ip", value=list_value("ip", "::ffff:192.0.2.5"))
        )
    ids = [
        post_comment(client, site["api_key"], {"content": "hi", "author": {"ip": ip}}, wait=0).get_json()["id"]
        for ip in ("::ffff:203.0.113.7", "192.0.2.5")
    ]
    with session_scope() as session:
        decide_pending(session, ids)  # here, or by a worker an earlier test left running: the same rules decide
    deadline = time.monotonic() + 30
    while True:
        with session_scope() as session:
            columns = select(Comment.status, Comment.decision, Comment.reasons)
            rows = session.execute(columns.where(Comment.id.in_(ids)).order_by(Comment.id)).all()
        if all(status == "decided" for status, *_ in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (_, blocked, blocked_reasons), (_, allowed, allowed_reasons) = rows
    assert (blocked, allowed) == ("reject", "approve")
    assert "author IP matches the blocklist entry '203.0.113.0/24'" in blocked_reasons
    assert "author IP matches the allowlist entry '192.0.2.5'" in allowed_reasons


def test_health_and_openapi(client: Any) -> None:
    assert client.get("/api/v1/health").get_json() == {"status": "ok"}
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/comments" in doc["paths"]
    assert "CommentIn" in doc["components"]["schemas"]


def test_security_headers(client: Any) -> None:
    response = client.get("/api/v1/health")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_authentication_comes_before_validation(client: Any, site: dict[str, Any]) -> None:
    """An unknown client learns nothing about the body rules: 401, not 422."""
    response = client.post(
        "/api/v1/comments", data=json.dumps({"colour": "red"}), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert _count(site["id"]) == 0


def test_feedback_on_a_pending_comment_decides_it_with_a_time(client: Any, site: dict[str, Any]) -> None:
    from tests.ui.helpers import add_comment

    pending = {"decision": None, "auto_decision": None, "category": None, "decided_by": None, "decided_at": None}
    comment_id = add_comment(site["id"], status="pending", spam_score=None, abuse_score=None, reasons=[], **pending)
    auth = {"Authorization": f"Bearer {site['api_key']}"}
    feedback = client.post(f"/api/v1/comments/{comment_id}/feedback", json={"label": "spam"}, headers=auth)
    assert feedback.status_code == 200
    view = client.get(f"/api/v1/comments/{comment_id}", headers=auth).get_json()
    assert (view["status"], view["decision"], view["category"], view["decided_by"]) == (
        "decided",
        "reject",
        "spam",
        "blog",
    )
    assert view["decided_at"] is not None


def test_repeated_feedback_makes_one_event_and_one_label(client: Any, site: dict[str, Any]) -> None:
    from service.models import Label, ModerationEvent
    from tests.ui.helpers import add_comment

    comment_id = add_comment(site["id"], decision="approve", category=None)
    auth = {"Authorization": f"Bearer {site['api_key']}"}
    for label in ("spam", "spam", "spam", "ham", "ham"):  # a blog retrying its reports, then changing its mind
        feedback = client.post(f"/api/v1/comments/{comment_id}/feedback", json={"label": label}, headers=auth)
        assert feedback.status_code == 200 and feedback.get_json()["label"] == label
    with session_scope() as session:
        events = session.scalars(
            select(ModerationEvent.to_decision)
            .where(ModerationEvent.comment_id == comment_id, ModerationEvent.action == "feedback")
            .order_by(ModerationEvent.id)
        ).all()
        labels = session.scalars(select(Label.label).where(Label.comment_id == comment_id).order_by(Label.id)).all()
    assert (events, labels) == (["reject", "approve"], ["spam", "ham"])
