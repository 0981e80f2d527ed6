"""Stream checks against a real Redis (base database 8; only 8 + STREAM_DB is flushed), with simulated time."""

from __future__ import annotations

import csv
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
import redis

from service import redis_bus
from service.config import settings
from service.decisions import stream
from service.decisions.hits import RuleHit
from service.models import Comment, Site
from tests.conftest import SHARED_DATA

# The test Redis (BOUNCER_TEST_REDIS_URL, as in conftest), 8 databases past its own: clear of the four it flushes.
_TEST_REDIS, _, _BASE_DB = os.environ.get("BOUNCER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rpartition("/")
REDIS_URL = f"{_TEST_REDIS}/{int(_BASE_DB or 0) + 8}"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _use_redis(monkeypatch: pytest.MonkeyPatch, url: str, tmp_path: Path) -> None:
    monkeypatch.setenv("BOUNCER_REDIS_URL", url)
    monkeypatch.setenv("BOUNCER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOUNCER_SECRET_KEY", "test-secret-of-the-stream-checks-tests")
    settings.cache_clear()
    redis_bus.reset_clients()
    stream.reset_breaker()


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[redis.Redis]:
    _use_redis(monkeypatch, REDIS_URL, tmp_path)
    client = redis_bus.client(redis_bus.STREAM_DB)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the stream tests need a real Redis at {REDIS_URL}: {exc}", pytrace=False)
    client.flushdb()
    yield client
    client.flushdb()
    settings.cache_clear()
    redis_bus.reset_clients()
    stream.reset_breaker()


def make_site(site_id: int = 1, **overrides: object) -> Site:
    return Site(id=site_id, name=f"site {site_id}", url=f"https://blog{site_id}.example.org", stream_settings=overrides)


def make_comment(site: Site, content: str, *, ip: str = "", email: str = "", post: str = "", **kw: str) -> Comment:
    comment = Comment(content=content, author_ip=ip, author_email=email, post_url=post, site_id=site.id, **kw)
    comment.site = site
    return comment


def check_one(comment: Comment, at: datetime) -> stream.StreamResult:
    return stream.check_stream([comment], now=at)[0]


def verdicts(result: stream.StreamResult) -> list[RuleHit]:
    return [h for h in result.hits if h.effect in ("hold", "reject")]


def ham_texts() -> list[str]:
    texts = []
    for name in ("youtube.csv", "sms.csv"):
        with open(SHARED_DATA / "spam" / name, newline="", encoding="utf-8") as fh:
            texts += [row["text"] for row in csv.DictReader(fh) if row["label"] == "0"]
    return texts


SPAM = (
    "Hey everyone, I made {money} dollars last week working from home with this simple method. "
    "No experience needed and it only takes an hour a day. Visit {link} to see how I did it and start "
    "earning today, spots are limited so hurry before they close registration!"
)
SWAPS = {
    "simple": ["easy", "simple", "quick"],
    "hurry": ["hurry", "be quick", "act fast"],
    "everyone": ["everyone", "guys", "folks"],
    "needed": ["needed", "required"],
    "limited": ["limited", "few"],
}


def campaign_copy(rng: random.Random, i: int) -> str:
    text = SPAM.format(money=rng.choice(["3000", "4,500", "5000"]), link=f"http://earn{i % 7}.cash-{i}.biz/?r={i}")
    for word, options in SWAPS.items():
        text = text.replace(word, rng.choice(options), 1)
    words = text.split()
    for _ in range(3):  # added punctuation
        k = rng.randrange(len(words))
        words[k] += rng.choice(["!!", "...", " -", "?!", ","])
    return " ".join(words)


def test_replay_campaign_is_caught_and_ham_is_untouched(conn: redis.Redis) -> None:
    rng = random.Random(7)
    site = make_site()
    hams = ham_texts()
    rng.shuffle(hams)
    hams = hams[:1500]
    posts = [f"https://blog1.example.org/post-{n}" for n in range(40)]
    events: list[tuple[float, str, Comment]] = []
    for text in hams:
        author = rng.randrange(900)  # some people comment more than once
        ip = f"10.{author % 200}.{author // 200}.{author % 250 + 1}" if author % 5 else f"2001:db8:{author:x}::1"
        c = make_comment(site, text, ip=ip, email=f"reader{author}@mail.example", post=rng.choice(posts))
        events.append((rng.uniform(0, 600), "ham", c))
    for i in range(50):
        ip = f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        c = make_comment(site, campaign_copy(rng, i), ip=ip, email=f"promo{i}@spam.example", post=rng.choice(posts))
        events.append((i * 12 + rng.uniform(0, 6), f"spam{i}", c))  # 50 copies over 10 minutes
    events.sort(key=lambda e: e[0])

    campaign: dict[int, stream.StreamResult] = {}
    marked = False
    for offset, kind, comment in events:
        result = check_one(comment, T0 + timedelta(seconds=offset))
        assert result.skipped is None
        if kind == "ham":
            assert verdicts(result) == [], (comment.content, result.hits)
            continue
        i = int(kind.removeprefix("spam"))
        campaign[i] = result
        if i == 20 and not marked:  # a moderator rejects one copy as spam; the engine calls record_decisions
            comment.decision, comment.category, comment.campaign_key = "reject", "spam", result.campaign_key
            stream.record_decisions([comment])
            marked = True

    keys = {r.campaign_key for r in campaign.values()}
    assert len(keys) == 1 and None not in keys, "all copies fall in one near-duplicate cluster"
    for i in range(5, 50):
        codes = {h.code for h in campaign[i].hits}
        assert "campaign" in codes or "campaign.rejected" in codes, (i, campaign[i].hits)
    hold = next(h for h in campaign[10].hits if h.code == "campaign")
    assert hold.effect == "hold" and hold.reason == "same text as 10 comments in the last hour"
    for i in range(21, 50):
        reject = [h for h in campaign[i].hits if h.code == "campaign.rejected"]
        assert reject and reject[0].effect == "reject" and reject[0].category == "spam"
        assert reject[0].reason == "near-duplicate of a comment rejected as spam"
    assert campaign[49].features["dup_count"] == 49
    assert campaign[49].features["campaign_rejected"] == 1.0
    # everything in the stream database expires
    assert all(cast(int, conn.pttl(k)) > 0 for k in conn.scan_iter(count=1000))


def test_short_repeated_phrases_never_form_a_campaign(conn: redis.Redis) -> None:
    site = make_site()
    for n in range(40):
        text = ["Great post, thanks!", "thanks!", "I love this song so much"][n % 3]
        result = check_one(make_comment(site, text, ip=f"10.9.{n}.1", post=f"/p{n}"), T0 + timedelta(seconds=n))
        assert result.campaign_key is None and verdicts(result) == []


def test_flood_from_one_ip_is_held_from_the_configured_count_and_slides_out(conn: redis.Redis) -> None:
    site = make_site()
    hams = ham_texts()[:31]
    held = []
    for n in range(30):
        at = T0 + timedelta(seconds=n * 2)  # 30 comments in a minute
        result = check_one(make_comment(site, hams[n], ip="198.51.100.7", email=f"x{n}@e.example"), at)
        held.append([h for h in result.hits if h.code == "velocity.ip"])
    default_from = stream.stream_defaults()["ip_hold_from"]
    assert all(not h for h in held[: default_from - 1])
    assert all(h and h[0].effect == "hold" for h in held[default_from - 1 :])
    assert held[11][0].reason == "12th comment from this IP in 5 minutes"
    window = stream.stream_defaults()["ip_window_seconds"]
    later = T0 + timedelta(seconds=58 + window + 1)
    result = check_one(make_comment(site, hams[30], ip="198.51.100.7"), later)
    assert not [h for h in result.hits if h.code.startswith("velocity")]
    assert result.features["ip_count"] == 1
    # the real expiry is set too: a counter lives no longer than its window
    assert 0 < cast(int, conn.pttl("v:1:ip:198.51.100.7")) <= window * 1000


@pytest.mark.parametrize(
    ("dimension", "make", "reason"),
    [
        (
            "ip_prefix",
            lambda n: {"ip": f"203.0.113.{n + 1}"},
            "5th comment from the network 203.0.113.0/24 in 5 minutes",
        ),
        ("ip_prefix", lambda n: {"ip": f"2001:db8:1:2::{n + 1:x}"}, "from the network 2001:db8:1:2::/64"),
        ("email", lambda n: {"email": f"Bot+{n}@Spam.example", "ip": f"10.1.{n}.1"}, "from this e-mail address"),
        ("author_domain", lambda n: {"author_url": f"https://shop.example/{n}"}, "author link to shop.example"),
        ("link_domain", lambda n: {"content_link": "http://pills.example/x"}, "5th comment linking to pills.example"),
        ("post", lambda n: {"post": "https://blog1.example.org/raid"}, "5th comment on this post in 5 minutes"),
    ],
)
def test_each_velocity_dimension_holds_with_a_named_reason(
    conn: redis.Redis, dimension: str, make: Callable[[int], dict[str, str]], reason: str
) -> None:
    site = make_site(**{f"{dimension}_hold_from": 5})
    hams = ham_texts()[100:110]
    results = []
    for n in range(6):
        fields = make(n)
        content = hams[n] + (" " + fields.pop("content_link") if "content_link" in fields else "")
        results.append(check_one(make_comment(site, content, **fields), T0 + timedelta(seconds=n)))
    code = f"velocity.{dimension}"
    assert [any(h.code == code for h in r.hits) for r in results] == [False] * 4 + [True] * 2
    assert reason in next(h.reason for h in results[4].hits if h.code == code)


def test_per_site_settings_override_the_defaults(conn: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    strict = make_site(1, ip_hold_from=3, campaign_hold_from=1, first_sight=False, no_such_setting=1)
    default = make_site(2)
    with caplog.at_level(logging.WARNING):
        merged = stream.stream_settings_for(strict)
    assert merged["ip_hold_from"] == 3 and merged["campaign_hold_from"] == 1 and merged["first_sight"] is False
    assert merged["post_hold_from"] == stream.stream_defaults()["post_hold_from"]
    assert "no_such_setting" in caplog.text
    texts = {
        1: "Buy cheap replica watches online now, best prices guaranteed, free worldwide shipping on every order",
        2: "Get your degree online in just two weeks, accredited by leading universities, no exams or classes",
    }
    for site in (strict, default):
        text = texts[site.id]
        results = [
            check_one(make_comment(site, f"{text} {n}", ip="192.0.2.5", email=f"w{n}@x.example", post=f"/p{n}"), T0)
            for n in range(3)
        ]
        codes = [{h.code for h in r.hits} for r in results]
        if site is strict:
            assert "velocity.ip" in codes[2] and "campaign" in codes[1]
            assert not any(c.startswith("first_sight") for cs in codes for c in cs)
        else:
            assert "velocity.ip" not in codes[2] and "campaign" not in codes[1]
    off = make_site(3, enabled=False)
    assert stream.check_stream([make_comment(off, texts[1], ip="192.0.2.5")], T0)[0] == stream.StreamResult(
        [], None, {}, None
    )


def test_first_sight_of_a_link_domain_or_author_is_a_note_per_site(conn: redis.Redis) -> None:
    site, other = make_site(1), make_site(2)
    text = "Nice write-up, I compared it with https://www.newtool.example/docs and it matches"
    first = check_one(make_comment(site, text, email="Ann@Example.com"), T0)
    notes = {h.code: h for h in first.hits}
    assert notes["first_sight.link_domain"].effect == "note"
    assert notes["first_sight.link_domain"].reason == "first link to newtool.example on this site"
    assert notes["first_sight.author"].effect == "note"
    assert first.features["first_sight_link_domain"] == 1 and first.features["first_sight_author"] == 1
    again = check_one(make_comment(site, text, email="ann@example.com"), T0 + timedelta(minutes=1))
    assert not [h for h in again.hits if h.code.startswith("first_sight")]
    elsewhere = check_one(make_comment(other, text, email="ann@example.com"), T0 + timedelta(minutes=2))
    assert {h.code for h in elsewhere.hits} >= {"first_sight.link_domain", "first_sight.author"}
    shared = check_one(make_comment(site, "see https://www.youtube.com/watch?v=x and https://blog1.example.org/"), T0)
    assert not [h for h in shared.hits if h.code.startswith("first_sight")]


def test_an_ipv4_client_counts_as_one_whichever_way_its_address_is_written(conn: redis.Redis) -> None:
    site = make_site(ip_hold_from=3)
    hams = ham_texts()[200:204]
    spellings = ["198.51.100.7", "::ffff:198.51.100.7", "::FFFF:C633:6407"]
    results = [
        check_one(make_comment(site, hams[n], ip=ip), T0 + timedelta(seconds=n)) for n, ip in enumerate(spellings)
    ]
    assert [r.features["ip_count"] for r in results] == [1, 2, 3]
    assert "3rd comment from this IP" in next(h.reason for h in results[2].hits if h.code == "velocity.ip")
    zoned = check_one(make_comment(site, hams[3], ip="fe80::1%eth0"), T0 + timedelta(seconds=3))
    assert zoned.features["ip_count"] == 0  # a zone ID is no client address: not counted


def test_a_batch_is_one_call_and_later_comments_see_earlier_ones(conn: redis.Redis) -> None:
    site = make_site()
    rng = random.Random(3)
    batch = [make_comment(site, campaign_copy(rng, i), ip=f"10.3.{i}.1", post=f"/p{i}") for i in range(6)]
    results = stream.check_stream(batch, T0)
    assert [r.features["dup_count"] for r in results] == [0, 1, 2, 3, 4, 5]
    assert [any(h.code == "campaign" for h in r.hits) for r in results] == [False] * 3 + [True] * 3


def test_a_redelivered_comment_is_not_counted_twice(conn: redis.Redis) -> None:
    site = make_site()
    rng = random.Random(5)
    for i in range(3):
        check_one(make_comment(site, campaign_copy(rng, i), ip=f"10.4.{i}.1", post=f"/p{i}"), T0)
    comment = make_comment(site, campaign_copy(rng, 9), ip="10.4.9.1", email="z@z.example", post="/p9")
    comment.id = 99
    first = check_one(comment, T0 + timedelta(seconds=5))
    second = check_one(comment, T0 + timedelta(seconds=30))
    assert first.features == second.features
    assert first.hits == second.hits


def test_rejection_is_remembered_without_a_campaign_key_and_a_human_approval_clears_it(conn: redis.Redis) -> None:
    site = make_site()
    rng = random.Random(11)
    rejected = make_comment(site, campaign_copy(rng, 0), ip="10.5.0.1")
    rejected.decision, rejected.category = "reject", "spam"  # e.g. decided while Redis was down: no key stored
    stream.record_decisions([rejected])
    copy = check_one(make_comment(site, campaign_copy(rng, 1), ip="10.5.1.1"), T0)
    assert [h.code for h in verdicts(copy)] == ["campaign.rejected"]

    approved = make_comment(site, campaign_copy(rng, 2), ip="10.5.2.1")
    approved.decision, approved.decided_by, approved.campaign_key = "approve", "moderator:3", copy.campaign_key
    stream.record_decisions([approved])
    after = check_one(make_comment(site, campaign_copy(rng, 3), ip="10.5.3.1"), T0 + timedelta(seconds=1))
    assert verdicts(after) == [] and after.campaign_key == copy.campaign_key


def test_redis_down_skips_quickly_without_raising(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _use_redis(monkeypatch, "redis://127.0.0.1:6390/0", tmp_path)
    site = make_site()
    batch = [make_comment(site, f"comment number {n}", ip="10.0.0.1") for n in range(10)]
    started = time.perf_counter()
    results = stream.check_stream(batch, T0)
    for _ in range(200):  # the breaker is open now: no connection attempts at all
        stream.check_stream(batch[:1], T0)
    batch[0].decision, batch[0].category = "reject", "spam"
    stream.record_decisions(batch)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, elapsed
    assert all(r.skipped == "stream checks skipped: Redis unavailable" and r.hits == [] for r in results)
    assert all(r.campaign_key is None for r in results)


def test_redis_slow_times_out_and_the_breaker_opens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        _use_redis(monkeypatch, f"redis://127.0.0.1:{silent.getsockname()[1]}/0", tmp_path)
        comment = make_comment(make_site(), "hello there", ip="10.0.0.1")
        started = time.perf_counter()
        first = stream.check_stream([comment], T0)[0]
        first_took = time.perf_counter() - started
        started = time.perf_counter()
        second = stream.check_stream([comment], T0)[0]
        second_took = time.perf_counter() - started
    assert first.skipped and second.skipped
    assert first_took < 0.5, first_took
    assert second_took < 0.01, second_took
    redis_bus.reset_clients()
    stream.reset_breaker()
    settings.cache_clear()
