"""The Akismet endpoints through the Flask test client: keys, Akismet-style errors, submissions, usage and stats.

Everything here runs without a model; comment-check decisions are covered with real clients in
``test_akismet_clients.py`` and the web fallback in ``test_akismet_decisions.py``.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import select, update

from service.akismet.views import THANKS
from service.api.schemas import CommentIn
from service.comments import store_comment
from service.db import session_scope
from service.models import Comment, CommentStatus, Label, ListEntry, ModerationEvent, Site
from tests.conftest import make_site

BLOG = "https://blog.example"


def akismet_post(client: Any, path: str, data: dict[str, Any], **kwargs: Any) -> Any:
    return client.post(path, data=data, **kwargs)


def assert_invalid(response: Any, help_contains: str) -> None:
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "invalid"
    assert response.mimetype == "text/plain"
    assert help_contains in response.headers["X-akismet-debug-help"]


def seed_comment(site_id: int, **fields: Any) -> int:
    body = {"content": "A stored comment", "author": {"name": "Sam", "ip": "198.51.100.9"}, **fields}
    is_test = bool(body.pop("is_test", False))
    auto = body.pop("auto_decision", None)
    with session_scope() as session:
        site = session.get(Site, site_id)
        assert site is not None
        comment, _ = store_comment(session, site, CommentIn.model_validate(body), source="akismet", is_test=is_test)
        if auto is not None:
            comment.status, comment.decision, comment.auto_decision = CommentStatus.DECIDED, auto, auto
        return comment.id


def current_labels(comment_id: int) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(select(Label.label).where(Label.comment_id == comment_id, Label.superseded.is_(False)))
        )


# verify-key ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["key", "api_key"])
def test_verify_key_valid(client: Any, site: dict[str, Any], field: str) -> None:
    response = akismet_post(client, "/1.1/verify-key", {field: site["akismet_key"], "blog": BLOG})
    assert response.status_code == 200 and response.get_data(as_text=True) == "valid"
    assert response.mimetype == "text/plain"


def test_verify_key_from_host_label(client: Any, site: dict[str, Any]) -> None:
    response = client.post(
        "/1.1/verify-key", data={"blog": BLOG}, base_url=f"http://{site['akismet_key']}.bouncer.example"
    )
    assert response.get_data(as_text=True) == "valid"


@pytest.mark.parametrize(
    ("data", "help_contains"),
    [
        ({"key": "aaaaaaaaaaaa", "blog": BLOG}, "not valid"),
        ({"key": "short", "blog": BLOG}, "not valid"),
        ({"blog": BLOG}, 'Empty "api_key" value'),
    ],
)
def test_verify_key_invalid(client: Any, data: dict[str, str], help_contains: str) -> None:
    assert_invalid(akismet_post(client, "/1.1/verify-key", data), help_contains)


def test_verify_key_needs_blog(client: Any, site: dict[str, Any]) -> None:
    assert_invalid(akismet_post(client, "/1.1/verify-key", {"key": site["akismet_key"]}), 'Empty "blog" value')


def test_inactive_site_key_is_invalid(client: Any, site: dict[str, Any]) -> None:
    with session_scope() as session:
        row = session.get(Site, site["id"])
        assert row is not None
        row.active = False
    assert_invalid(akismet_post(client, "/1.1/verify-key", {"key": site["akismet_key"], "blog": BLOG}), "not valid")


# comment-check errors: Akismet style, nothing stored ---------------------------------------------------------


def _comment_count(site_id: int) -> int:
    with session_scope() as session:
        return len(session.scalars(select(Comment.id).where(Comment.site_id == site_id)).all())


@pytest.mark.parametrize(
    ("drop", "extra", "help_contains"),
    [
        ("api_key", {}, 'Empty "api_key" value'),
        ("blog", {}, 'Empty "blog" value'),
        ("user_ip", {}, 'Empty "user_ip" value'),
        (None, {"comment_content": "x" * 32_001}, '"comment_content" is too long'),
        (None, {"is_test": "perhaps"}, '"is_test"'),
    ],
)
def test_comment_check_invalid_requests(
    client: Any, site: dict[str, Any], drop: str | None, extra: dict[str, str], help_contains: str
) -> None:
    data = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "203.0.113.1", "comment_content": "hi", **extra}
    data.pop(drop or "", None)
    assert_invalid(akismet_post(client, "/1.1/comment-check", data), help_contains)
    assert _comment_count(site["id"]) == 0


def test_a_date_past_9999_in_utc_is_kept_in_meta_not_a_500(client: Any, site: dict[str, Any]) -> None:
    # Converting it to UTC overflowed in parse_gmt: a 500 with a JSON body on comment-check and both submits alike.
    date = "9999-12-31T23:00:00-05:00"
    data = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "198.51.100.9", "comment_content": "Nice post"}
    response = akismet_post(client, "/1.1/submit-ham", {**data, "comment_date_gmt": date})
    assert response.status_code == 200 and response.get_data(as_text=True) == THANKS
    with session_scope() as session:
        comment = session.scalars(select(Comment).where(Comment.site_id == site["id"])).one()
        assert comment.created_at is None and comment.meta["comment_date_gmt"] == date


def test_an_encoded_surrogate_is_stored_not_a_500(client: Any, site: dict[str, Any]) -> None:
    # The form equivalent of JSON's "\ud800": its UTF-8 form (ED A0 80), which is not valid UTF-8. Percent-encoded,
    # Werkzeug keeps the escape as text; sent raw in multipart, each byte becomes U+FFFD. Either way a storable string.
    fields = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "198.51.100.9"}
    encoded = urlencode({**fields, "comment_content": "one"}) + "&comment_author=%ED%A0%80"
    response = client.post("/1.1/submit-spam", data=encoded, content_type="application/x-www-form-urlencoded")
    assert response.get_data(as_text=True) == THANKS
    parts = [*fields.items(), ("comment_content", "two")]
    multipart = b"".join(
        b'--B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (k.encode(), v.encode()) for k, v in parts
    )
    multipart += b'--B\r\nContent-Disposition: form-data; name="comment_author"\r\n\r\n\xed\xa0\x80\r\n--B--\r\n'
    response = client.post("/1.1/submit-spam", data=multipart, content_type="multipart/form-data; boundary=B")
    assert response.get_data(as_text=True) == THANKS
    with session_scope() as session:
        stored = session.execute(
            select(Comment.content, Comment.author_name).where(Comment.site_id == site["id"]).order_by(Comment.id)
        ).all()
    assert [tuple(row) for row in stored] == [("one", "%ED%A0%80"), ("two", "\ufffd\ufffd\ufffd")]


def test_an_ip_rule_matches_an_ipv4_mapped_user_ip(client: Any, site: dict[str, Any]) -> None:
    with session_scope() as session:
        session.add(ListEntry(site_id=site["id"], action="block", kind="ip", value="203.0.113.7"))
    data = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "::ffff:203.0.113.7", "comment_content": "Hi"}
    response = akismet_post(client, "/1.1/comment-check", data)
    assert response.get_data(as_text=True) == "true"
    assert response.headers["X-akismet-pro-tip"] == "discard"
    with session_scope() as session:
        comment = session.get(Comment, int(response.headers["X-akismet-guid"]))
        assert comment is not None and comment.author_ip == "203.0.113.7"
        assert "author IP matches the blocklist entry '203.0.113.7'" in comment.reasons


def test_a_user_ip_with_a_zone_id_is_kept_in_meta_and_no_ip_rule_applies(client: Any, site: dict[str, Any]) -> None:
    # Akismet takes any user_ip; the native API refuses this one (422). Here it is answered, not "invalid".
    with session_scope() as session:
        session.add(ListEntry(site_id=site["id"], action="block", kind="ip", value="fe80::/10"))
    data = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "fe80::1%eth0", "comment_content": "Hi"}
    response = akismet_post(client, "/1.1/comment-check", data)
    assert response.get_data(as_text=True) in ("true", "false")
    with session_scope() as session:
        comment = session.get(Comment, int(response.headers["X-akismet-guid"]))
        assert comment is not None and comment.status == "decided"
        assert (comment.author_ip, comment.meta["user_ip"]) == ("", "fe80::1%eth0")
        assert not [r for r in comment.reasons if "author IP" in r]


def test_percent_escapes_that_are_not_utf8_are_kept_as_text(client: Any, site: dict[str, Any]) -> None:
    # Pins what Werkzeug does (docs/akismet.md, "Encoding"): an escape of a byte that is not part of valid UTF-8
    # (a Latin-1 blog's %E9) is kept as its three characters, in upper case; one that is no escape, as it is.
    fields = urlencode({"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "198.51.100.9"})
    body = fields + "&comment_content=caf%C3%A9+caf%e9+%FF%FE+%C3+100%25+%ZZ+%&comment_author=Jos%E9"
    response = client.post("/1.1/submit-spam", data=body, content_type="application/x-www-form-urlencoded")
    assert response.get_data(as_text=True) == THANKS
    with session_scope() as session:
        comment = session.scalars(select(Comment).where(Comment.site_id == site["id"])).one()
        assert comment.content == "café caf%E9 %FF%FE %C3 100% %ZZ %"
        assert comment.author_name == "Jos%E9"


@pytest.mark.parametrize("path", ["/1.1/comment-check", "/1.1/submit-spam", "/1.1/verify-key"])
@pytest.mark.parametrize("key_in", ["form", "host"])
def test_a_form_body_with_raw_bytes_that_are_not_utf8_is_invalid_and_says_so(
    client: Any, site: dict[str, Any], key_in: str, path: str
) -> None:
    # Werkzeug cannot decode the body and drops every field; the answer said 'Empty "api_key" value' (or "blog"),
    # sending the blog's owner to check a key that was fine. Nothing is stored.
    body = urlencode({"blog": BLOG, "user_ip": "198.51.100.9"}).encode() + b"&comment_content=caf\xe9"
    kwargs: dict[str, Any] = {"data": body, "content_type": "application/x-www-form-urlencoded; charset=ISO-8859-1"}
    if key_in == "form":
        kwargs["data"] = f"api_key={site['akismet_key']}&".encode() + body
    else:
        kwargs["base_url"] = f"http://{site['akismet_key']}.bouncer.example"
    offset = kwargs["data"].index(b"\xe9")
    assert_invalid(client.post(path, **kwargs), f"not valid UTF-8 form data (byte {offset})")
    assert _comment_count(site["id"]) == 0


def test_comment_check_bad_key(client: Any) -> None:
    data = {"api_key": "zzzzzzzzzzzz", "blog": BLOG, "user_ip": "203.0.113.1", "comment_content": "hi"}
    assert_invalid(akismet_post(client, "/1.1/comment-check", data), "not valid")


def test_body_over_64_kib_is_invalid_not_an_error(client: Any, site: dict[str, Any]) -> None:
    data = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "203.0.113.1", "comment_content": "y" * 70_000}
    assert_invalid(akismet_post(client, "/1.1/comment-check", data), "larger than 65536 bytes")
    assert _comment_count(site["id"]) == 0


def test_streamed_body_over_64_kib_is_invalid_not_cut(client: Any, site: dict[str, Any]) -> None:
    # A chunked body has no Content-Length; Werkzeug handed the view its first 65536 bytes as if that were all, so
    # a comment of 20 000 'é' (120 KB encoded) was stored and checked as its first ~10 900 characters.
    body = urlencode({"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "203.0.113.1"}) + "&comment_content="
    body += quote("é" * 20_000)
    response = client.post(
        "/1.1/submit-spam",
        input_stream=io.BytesIO(body.encode()),
        content_type="application/x-www-form-urlencoded",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn sets for a chunked request
    )
    assert_invalid(response, "larger than 65536 bytes")
    assert _comment_count(site["id"]) == 0


# submit-spam / submit-ham -------------------------------------------------------------------------------------


def submit(client: Any, site: dict[str, Any], endpoint: str, **fields: str) -> Any:
    data = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "198.51.100.9", **fields}
    response = akismet_post(client, f"/1.1/{endpoint}", data)
    assert response.status_code == 200 and response.get_data(as_text=True) == THANKS
    return response


def test_submit_spam_by_guid_labels_the_comment(client: Any, site: dict[str, Any]) -> None:
    cid = seed_comment(site["id"], auto_decision="approve")
    submit(client, site, "submit-spam", guid=str(cid), comment_content="text differs; the guid wins")
    assert current_labels(cid) == ["spam"]
    with session_scope() as session:
        comment = session.get(Comment, cid)
        assert comment is not None and (comment.decision, comment.category) == ("reject", "spam")
        event = session.scalars(select(ModerationEvent).where(ModerationEvent.comment_id == cid)).one()
        assert (event.actor, event.action, event.from_decision) == ("akismet", "feedback", "approve")


def test_submit_ham_matches_content_author_and_ip(client: Any, site: dict[str, Any]) -> None:
    cid = seed_comment(site["id"], content="Is this spam?", auto_decision="reject")
    submit(client, site, "submit-ham", comment_content="Is this spam?", comment_author="Sam")
    assert current_labels(cid) == ["ham"]
    submit(client, site, "submit-spam", comment_content="Is this spam?", comment_author="Sam")
    assert current_labels(cid) == ["spam"]  # the later label supersedes the earlier one


def feedback_of(comment_id: int) -> tuple[list[str], list[tuple[str, str | None]]]:
    """The comment's labels (superseded ones too) and its audit events (action, to_decision)."""
    with session_scope() as session:
        # In the order they were written: without ORDER BY, PostgreSQL may return a row put in a page's free space
        # (left by an earlier test's deletes) before an older one.
        labels = session.scalars(select(Label.label).where(Label.comment_id == comment_id).order_by(Label.id)).all()
        events = session.execute(
            select(ModerationEvent.action, ModerationEvent.to_decision)
            .where(ModerationEvent.comment_id == comment_id)
            .order_by(ModerationEvent.id)
        ).all()
    return list(labels), [(action, to_decision) for action, to_decision in events]


@pytest.mark.parametrize("by", ["guid", "content"])
def test_a_repeated_submit_makes_one_label_and_one_event(client: Any, site: dict[str, Any], by: str) -> None:
    # Each repeat (a client's retry, a moderator clicking twice) added a "feedback" event to the audit trail.
    cid = seed_comment(site["id"], content="Buy now", auto_decision="approve")
    fields = {"guid": str(cid)} if by == "guid" else {"comment_content": "Buy now", "comment_author": "Sam"}
    for _ in range(3):
        submit(client, site, "submit-spam", **fields)
    assert feedback_of(cid) == (["spam"], [("feedback", "reject")])
    submit(client, site, "submit-ham", **fields)  # a different report still counts
    submit(client, site, "submit-ham", **fields)
    assert feedback_of(cid) == (["spam", "ham"], [("feedback", "reject"), ("feedback", "approve")])
    assert current_labels(cid) == ["ham"]


def test_submit_spam_of_a_comment_the_model_rejected_is_still_a_label(client: Any, site: dict[str, Any]) -> None:
    # Only the blog's own repeat is nothing new: its confirmation of the model's decision is a human label.
    cid = seed_comment(site["id"], auto_decision="reject")
    with session_scope() as session:
        comment = session.get(Comment, cid)
        assert comment is not None
        comment.category, comment.decided_by = "spam", "worker"
    submit(client, site, "submit-spam", guid=str(cid))
    submit(client, site, "submit-spam", guid=str(cid))
    assert feedback_of(cid) == (["spam"], [("feedback", "reject")])


def submit_spam_at_once(app: Any, data: dict[str, str], n: int) -> list[str]:
    """The answers to ``n`` copies of one submit-spam sent at the same moment, each on a client of its own."""
    start = threading.Barrier(n)

    def send(_: int) -> str:
        http = app.test_client()
        start.wait()
        return str(http.post("/1.1/submit-spam", data=data).get_data(as_text=True))

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(send, range(n)))


def test_the_same_submit_twice_at_once_makes_one_label_and_one_event(app: Any, site: dict[str, Any]) -> None:
    cid = seed_comment(site["id"], auto_decision="approve")
    data = {"api_key": site["akismet_key"], "blog": BLOG, "user_ip": "198.51.100.9", "guid": str(cid)}
    assert submit_spam_at_once(app, data, 4) == [THANKS] * 4
    assert feedback_of(cid) == (["spam"], [("feedback", "reject")])


def test_the_same_submit_of_an_unknown_comment_twice_at_once_stores_it_once(app: Any, site: dict[str, Any]) -> None:
    """Both requests found no comment and each stored one: two comments, two labels, one spam."""
    data = {
        "api_key": site["akismet_key"],
        "blog": BLOG,
        "user_ip": "198.51.100.10",
        "comment_content": "a spam the blog's moderators caught",
        "comment_author": "Bot",
        "permalink": "https://blog.example/post-1",
    }
    assert submit_spam_at_once(app, data, 4) == [THANKS] * 4
    with session_scope() as session:
        stored = list(session.scalars(select(Comment.id).where(Comment.site_id == site["id"])))
    assert len(stored) == 1, stored
    assert feedback_of(stored[0]) == (["spam"], [("feedback", "reject")])
    # Once the purge erased its IP, the same report still finds it (by what the purge keeps).
    with session_scope() as session:
        session.execute(update(Comment).where(Comment.id == stored[0]).values(author_ip=""))
    assert app.test_client().post("/1.1/submit-spam", data=data).get_data(as_text=True) == THANKS
    with session_scope() as session:
        assert list(session.scalars(select(Comment.id).where(Comment.site_id == site["id"]))) == stored


def test_submit_of_an_unknown_comment_stores_it_labelled(client: Any, site: dict[str, Any]) -> None:
    submit(client, site, "submit-spam", comment_content="never checked before", comment_author="Bot")
    with session_scope() as session:
        comment = session.scalars(select(Comment).where(Comment.site_id == site["id"])).one()
        assert (comment.content, comment.status, comment.decision) == ("never checked before", "decided", "reject")
        assert comment.source == "akismet"
        cid = comment.id
    assert current_labels(cid) == ["spam"]


def test_submit_guid_of_another_site_does_not_touch_it(client: Any, site: dict[str, Any]) -> None:
    other = make_site(name="Other blog")
    cid = seed_comment(other["id"], auto_decision="approve")
    submit(client, site, "submit-spam", guid=str(cid), comment_content="x")
    assert current_labels(cid) == []


@pytest.mark.parametrize("guid", ["²", "١٢", "9" * 19, "9223372036854775808", "1" * 5000, "0", "e5d3b1c2-9a"])
def test_submit_with_a_guid_that_is_no_comment_id_stores_it_labelled(
    client: Any, site: dict[str, Any], guid: str
) -> None:
    # '²' passed isdigit() and broke int(); ids past 2**63-1 broke the query (SQLite OverflowError, PostgreSQL
    # "bigint out of range"): each was a 500. A guid that cannot be ours is an unknown comment, as for any other.
    submit(client, site, "submit-spam", guid=guid, comment_content="a spam the blog caught", comment_author="Bot")
    with session_scope() as session:
        comment = session.scalars(select(Comment).where(Comment.site_id == site["id"])).one()
        assert (comment.content, comment.decision) == ("a spam the blog caught", "reject")
        cid = comment.id
    assert current_labels(cid) == ["spam"]


def test_submit_with_a_long_name_and_nul_is_taken_not_invalid(client: Any, site: dict[str, Any]) -> None:
    # "invalid" made the PyPI client raise APIKeyError ("key invalid") for what a spammer typed in the comment form.
    submit(client, site, "submit-spam", comment_content="cheap\x00pills", comment_author="B" * 600)
    with session_scope() as session:
        comment = session.scalars(select(Comment).where(Comment.site_id == site["id"])).one()
        assert (comment.content, comment.author_name) == ("cheap\ufffdpills", "B" * 500)
        cid = comment.id
    submit(client, site, "submit-ham", comment_content="cheap\x00pills", comment_author="B" * 600)
    assert current_labels(cid) == ["ham"]  # the second report finds the same comment by its cut name


@pytest.mark.parametrize("flag", ["1", "true", "True"])
def test_submit_is_test_never_trains(client: Any, site: dict[str, Any], flag: str) -> None:
    real = seed_comment(site["id"], content="real comment", auto_decision="approve")
    submit(client, site, "submit-spam", comment_content="real comment", comment_author="Sam", is_test=flag)
    assert current_labels(real) == []  # a test submission does not touch a real comment
    with session_scope() as session:
        stored = session.scalars(select(Comment).where(Comment.site_id == site["id"], Comment.is_test.is_(True))).one()
        assert stored.decision == "reject"
        assert session.scalars(select(Label).where(Label.site_id == site["id"])).all() == []


# usage-limit and get-stats ------------------------------------------------------------------------------------


def test_usage_limit_counts_this_months_checks(client: Any, site: dict[str, Any]) -> None:
    for _ in range(3):
        seed_comment(site["id"])
    response = client.get(f"/1.2/usage-limit?api_key={site['akismet_key']}")
    assert response.status_code == 200 and response.is_json
    assert response.get_json() == {"limit": "none", "usage": 3, "percentage": "0.00", "throttled": False}
    assert client.get("/1.2/usage-limit?api_key=nopenopenope").get_data(as_text=True) == "invalid"


def test_get_stats_shape_and_counts(client: Any, site: dict[str, Any]) -> None:
    missed = seed_comment(site["id"], content="slipped through", auto_decision="approve")
    false_positive = seed_comment(site["id"], content="wrongly held", auto_decision="hold")
    seed_comment(site["id"], content="caught", auto_decision="reject")
    seed_comment(site["id"], content="fine", auto_decision="approve")
    seed_comment(site["id"], content="test only", auto_decision="reject", is_test=True)
    submit(client, site, "submit-spam", guid=str(missed))
    submit(client, site, "submit-ham", guid=str(false_positive))

    response = akismet_post(client, "/1.1/get-stats", {"key": site["akismet_key"], "blog": BLOG})
    body = response.get_json()
    month = datetime.now(UTC).strftime("%Y-%m")
    assert body == {
        "spam": 2,  # the reject and the hold (holds answer true by default)
        "ham": 2,
        "missed_spam": 1,
        "false_positives": 1,
        "accuracy": 50.0,
        "breakdown": {month: {"spam": 2, "ham": 2, "missed_spam": 1, "false_positives": 1, "da": f"{month}-01"}},
        "time_saved": 0,
    }
    by_day = akismet_post(client, "/1.1/get-stats", {"key": site["akismet_key"], "blog": BLOG, "from": "60-days"})
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert list(by_day.get_json()["breakdown"]) == [today]
    by_year = akismet_post(client, "/1.1/get-stats", {"key": site["akismet_key"], "blog": BLOG, "from": "all"})
    year = datetime.now(UTC).strftime("%Y")
    assert by_year.get_json()["breakdown"][year]["da"] == f"{year}-01-01"


def test_get_stats_six_months_leaves_out_older_comments(client: Any, site: dict[str, Any]) -> None:
    old = seed_comment(site["id"], auto_decision="reject")
    with session_scope() as session:
        comment = session.get(Comment, old)
        assert comment is not None
        comment.received_at = datetime.now(UTC) - timedelta(days=400)
    body = akismet_post(client, "/1.1/get-stats", {"key": site["akismet_key"], "blog": BLOG}).get_json()
    assert (body["spam"], body["breakdown"], body["accuracy"]) == (0, {}, 100.0)
    everything = akismet_post(client, "/1.1/get-stats", {"key": site["akismet_key"], "blog": BLOG, "from": "all"})
    assert everything.get_json()["spam"] == 1
