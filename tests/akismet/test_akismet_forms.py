"""Akismet form fields → Bouncer's comment model: every documented field mapped, unknown fields ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from service.akismet.forms import AkismetFormError, parse_bool, parse_comment, parse_gmt
from service.akismet.views import host_key

BASE = {"blog": "https://blog.example", "user_ip": "203.0.113.7"}


def form(pairs: dict[str, Any] | list[tuple[str, str]]) -> MultiDict[str, str]:
    items = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    return MultiDict([*BASE.items(), *items])


def test_every_documented_field_is_mapped() -> None:
    parsed = parse_comment(
        form(
            [
                ("user_agent", "Mozilla/5.0"),
                ("referrer", "https://search.example/?q=x"),
                ("permalink", "https://blog.example/post/1"),
                ("comment_type", "reply"),
                ("comment_author", "Ada"),
                ("comment_author_email", "ada@example.org"),
                ("comment_author_url", "https://ada.example"),
                ("comment_content", "Nice post"),
                ("comment_date_gmt", "2024-05-01 12:30:00"),
                ("comment_post_modified_gmt", "2024-04-30T08:00:00Z"),
                ("comment_parent", "41"),
                ("comment_context[]", "cooking"),
                ("comment_context[]", "recipes"),
                ("blog_lang", "en_us, fr_ca"),
                ("blog_charset", "UTF-8"),
                ("user_role", "subscriber"),
                ("is_test", "1"),
                ("recheck_reason", "edit"),
                ("honeypot_field_name", "hidden_trap"),
                ("hidden_trap", "gotcha"),
            ]
        )
    )
    c = parsed.comment
    assert parsed.blog == "https://blog.example" and parsed.is_test is True
    assert (c.author.ip, c.author.user_agent, c.author.name) == ("203.0.113.7", "Mozilla/5.0", "Ada")
    assert (c.author.email, c.author.url) == ("ada@example.org", "https://ada.example")
    assert (c.content, c.type, c.parent_external_id, c.lang) == ("Nice post", "reply", "41", "en_us")
    assert c.post.url == "https://blog.example/post/1"
    assert c.referrer == "https://search.example/?q=x"
    assert c.created_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert c.honeypot == "gotcha"
    assert c.meta == {
        "blog": "https://blog.example",
        "user_role": "subscriber",
        "blog_charset": "UTF-8",
        "recheck_reason": "edit",
        "comment_post_modified_gmt": "2024-04-30T08:00:00Z",
        "honeypot_field_name": "hidden_trap",
        "blog_lang": "en_us, fr_ca",
        "comment_context": ["cooking", "recipes"],
    }


def test_unknown_fields_are_ignored() -> None:
    parsed = parse_comment(
        form({"HTTP_ACCEPT": "text/html", "POST_comment_post_ID": "7", "SERVER_SOFTWARE": "nginx", "x": "y"})
    )
    assert parsed.comment.meta == {"blog": "https://blog.example"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("0", False), ("true", True), ("false", False), ("True", True), ("False", False), ("", False)],
)
def test_is_test_spellings(raw: str, expected: bool) -> None:
    assert parse_bool(raw) is expected
    assert parse_comment(form({"is_test": raw})).is_test is expected


def test_is_test_garbage_is_an_error() -> None:
    with pytest.raises(AkismetFormError, match="is_test"):
        parse_comment(form({"is_test": "maybe"}))


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ({"comment_type": "forum-post"}, "forum-post"),
        ({"content_type": "post"}, "post"),  # discourse
        ({"comment_type": "signup", "content_type": "post"}, "signup"),
        ({}, "comment"),
    ],
)
def test_comment_type_or_content_type(pairs: dict[str, str], expected: str) -> None:
    assert parse_comment(form(pairs)).comment.type == expected


@pytest.mark.parametrize(
    "pairs",
    [
        [("comment_context[]", "a"), ("comment_context[]", "b")],
        [("comment_context[0]", "a"), ("comment_context[1]", "b")],
        [("comment_context", "a"), ("comment_context", "b")],
    ],
)
def test_comment_context_arrays(pairs: list[tuple[str, str]]) -> None:
    assert parse_comment(form(pairs)).comment.meta["comment_context"] == ["a", "b"]


def test_huge_comment_context_is_trimmed_to_the_meta_cap() -> None:
    parsed = parse_comment(form([("comment_context[]", "x" * 400)] * 40))
    assert 0 < len(parsed.comment.meta["comment_context"]) < 16


def test_honeypot_never_reads_a_documented_field() -> None:
    parsed = parse_comment(form({"honeypot_field_name": "comment_content", "comment_content": "hello"}))
    assert parsed.comment.honeypot == ""


def test_honeypot_empty_trap_is_not_a_hit() -> None:
    assert parse_comment(form({"honeypot_field_name": "trap", "trap": ""})).comment.honeypot == ""


@pytest.mark.parametrize(
    ("missing", "message"),
    [("blog", 'Empty "blog" value'), ("user_ip", 'Empty "user_ip" value')],
)
def test_required_fields(missing: str, message: str) -> None:
    pairs = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(AkismetFormError) as info:
        parse_comment(MultiDict(list(pairs.items())))
    assert info.value.field == missing and info.value.message == message


def test_content_over_32000_characters_is_refused_naming_the_field() -> None:
    with pytest.raises(AkismetFormError) as info:
        parse_comment(form({"comment_content": "a" * 32_001}))
    assert info.value.field == "comment_content"
    assert "32000" in info.value.message


def test_browser_supplied_fields_are_truncated_not_refused() -> None:
    c = parse_comment(form({"user_agent": "u" * 5000, "referrer": "https://r.example/" + "r" * 5000})).comment
    assert len(c.author.user_agent) == 1000 and len(c.referrer) == 2000


def test_visitor_supplied_author_fields_are_truncated_not_refused() -> None:
    # A spammer controls these; "invalid" would read as a bad API key to the client and leave the comment unchecked.
    c = parse_comment(
        form(
            {
                "comment_author": "n" * 600,
                "comment_author_email": "e" * 400 + "@spam.example",
                "comment_author_url": "https://spam.example/" + "u" * 3000,
            }
        )
    ).comment
    assert (len(c.author.name), len(c.author.email), len(c.author.url)) == (500, 320, 2000)


def test_nul_characters_are_replaced_not_refused() -> None:
    c = parse_comment(
        form(
            {
                "comment_content": "cheap\x00pills",
                "comment_author": "Bot\x00",
                "comment_context[]": "a\x00b",
                "honeypot_field_name": "trap",
                "trap": "\x00",
            }
        )
    ).comment
    assert (c.content, c.author.name, c.meta["comment_context"]) == ("cheap\ufffdpills", "Bot\ufffd", ["a\ufffdb"])
    assert c.honeypot == "\ufffd"  # a trap holding only NUL was still filled in


def test_lone_surrogates_are_replaced_not_refused() -> None:
    # The native API refuses them (422); an Akismet client would read "invalid" as a bad key, so they are replaced.
    c = parse_comment(
        form(
            {
                "comment_content": "a\ud800b",
                "comment_author": "\udfff",
                "comment_context[]": "x\udc00",
                "user_role": "\ud800",
            }
        )
    ).comment
    assert (c.content, c.author.name, c.meta["comment_context"]) == ("a\ufffdb", "\ufffd", ["x\ufffd"])
    assert c.meta["user_role"] == "\ufffd"


@pytest.mark.parametrize(
    ("raw", "ip", "kept"),
    [
        ("198.51.100.4, 10.0.0.1", "198.51.100.4", None),
        ("2001:db8::1", "2001:db8::1", None),
        ("unknown", "", "unknown"),
        ("::ffff:198.51.100.4", "198.51.100.4", None),  # stored canonical, as the IP rules match it
        ("2001:DB8:0::1, 10.0.0.1", "2001:db8::1", None),
        ("fe80::1%eth0", "", "fe80::1%eth0"),  # a zone ID: no client's address, so not one for the rules either
    ],
)
def test_user_ip_is_read_leniently(raw: str, ip: str, kept: str | None) -> None:
    c = parse_comment(MultiDict([("blog", "https://b.example"), ("user_ip", raw)])).comment
    assert c.author.ip == ip
    assert c.meta.get("user_ip") == kept


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T12:30:00Z", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T14:30:00+02:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01 12:30:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("1714566600", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("١٧١٤٥٦٦٦٠٠", None),  # Arabic-Indic digits: not a Unix time
        ("yesterday", None),
        ("9999-12-31T23:00:00-05:00", None),  # readable, but past year 9999 in UTC
        ("0001-01-01T00:00:00+01:00", None),
        ("", None),
    ],
)
def test_dates(raw: str, expected: datetime | None) -> None:
    assert parse_gmt(raw) == expected


def test_unreadable_date_is_kept_in_meta() -> None:
    c = parse_comment(form({"comment_date_gmt": "yesterday"})).comment
    assert c.created_at is None and c.meta["comment_date_gmt"] == "yesterday"


def test_top_level_parent_zero_is_no_parent() -> None:
    assert parse_comment(form({"comment_parent": "0"})).comment.parent_external_id is None


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("abcdef123456.bouncer.example", "abcdef123456"),
        ("ABCDEF123456.localhost:8000", "abcdef123456"),
        ("bouncer.example", ""),
        ("abcdef123456", ""),  # no domain after it: not a key label
        ("127.0.0.1:8000", ""),
        ("[::1]:8000", ""),
        ("abcdef12345.bouncer.example", ""),
    ],
)
def test_key_from_host(host: str, key: str) -> None:
    assert host_key(host) == key
