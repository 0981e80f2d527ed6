"""The admin's activity page (/admin/activity): the moderation audit log of every site, its filters, keyset pages
and CSV, made by real actions through the moderation endpoints.

The session's database is shared and never emptied: every assertion is scoped to a site the test made.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.ui.helpers import BrowserSession, add_comment, events_of, login, make_ui_site, make_user

Sessions = Callable[[], BrowserSession]
JSON = {"Accept": "application/json"}


def act(client: Any, token: str, ids: list[int], action: str, seen: str = "hold") -> None:
    """A moderator's (bulk) action through /moderation/act; every comment must change."""
    data: dict[str, Any] = {"action": action, "ids": [str(i) for i in ids], "csrf_token": token}
    data |= {f"seen_{i}": seen for i in ids}
    body = client.post("/moderation/act", data=data, headers=JSON).get_json()
    assert [r["applied"] for r in body["results"]] == [True] * len(ids), body


def event_ids(page: str) -> list[int]:
    """The event rows of an activity page, top to bottom."""
    return [int(n) for n in re.findall(r'<tr data-event="(\d+)"', page)]


def link(page: str, rel: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)" rel="{rel}"', page)
    return html.unescape(match.group(1)) if match else None


def site_event_ids(site_id: int) -> list[int]:
    """The site's events in the database, newest first (time, then id)."""
    from service.db import session_scope
    from service.models import ModerationEvent

    with session_scope() as db:
        return list(
            db.scalars(
                select(ModerationEvent.id)
                .where(ModerationEvent.site_id == site_id)
                .order_by(ModerationEvent.created_at.desc(), ModerationEvent.id.desc())
            )
        )


def get_page(client: Any, query: str) -> str:
    response = client.get(f"/admin/activity?{query}")
    assert response.status_code == 200, response.status_code
    return str(response.get_data(as_text=True))


def test_admin_sees_a_moderators_actions_and_a_moderator_is_refused(app: Any) -> None:
    site = make_ui_site()
    moderator = make_user("moderator", (site["id"],))
    admin = make_user("admin")
    kept = add_comment(site["id"], content="Lovely roses, thank you for the tips.")
    junk = add_comment(site["id"], content="Cheap watches at discount prices here.")
    mods, admins = app.test_client(), app.test_client()
    token = login(mods, moderator)
    act(mods, token, [kept], "approve")
    act(mods, token, [junk], "spam")
    login(admins, admin)

    page = get_page(admins, f"site={site['id']}")
    assert 'href="/admin/activity"' in page and 'aria-current="page">Activity' in page  # the admin nav links it
    assert event_ids(page) == site_event_ids(site["id"]) and len(event_ids(page)) == 2
    rows = page.split('<tr data-event="')[1:]
    spam_row, approve_row = rows  # newest first
    for row, cid, text, to in (
        (approve_row, kept, "Lovely roses", "approve"),
        (spam_row, junk, "Cheap watches", "reject"),
    ):
        assert moderator["email"] in row and site["name"] in row
        assert f'href="/moderation/comments/{cid}"' in row and text in row
        assert f"hold → {to}" in row
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", row)
    assert "(spam)" in spam_row

    assert admins.get(f"/moderation/comments/{kept}").status_code == 200  # where the link goes
    assert mods.get("/admin/activity").status_code == 403
    assert mods.get(f"/admin/activity.csv?site={site['id']}").status_code == 403
    assert app.test_client().get("/admin/activity").status_code == 302  # signed out: to the login page


def test_filters_narrow_by_actor_site_action_status_and_dates(app: Any) -> None:
    from service.db import session_scope
    from service.decisions.engine import decide_pending
    from service.models import ModerationEvent

    site, other_site = make_ui_site(), make_ui_site()
    ann = make_user("moderator", (site["id"], other_site["id"]))
    bob = make_user("moderator", (site["id"],))
    admin = make_user("admin")
    c1, c2, c3, c4 = (add_comment(site["id"], content=f"Comment {n} on the roses.") for n in range(4))
    elsewhere = add_comment(other_site["id"])
    pending = add_comment(site["id"], status="pending", decision=None, auto_decision=None, decided_by=None)
    anns, bobs, admins = app.test_client(), app.test_client(), app.test_client()
    ann_token, bob_token = login(anns, ann), login(bobs, bob)
    act(anns, ann_token, [c1], "approve")
    act(anns, ann_token, [elsewhere], "approve")
    act(bobs, bob_token, [c2], "spam")
    act(bobs, bob_token, [c3], "abuse")
    undone = bobs.post("/moderation/undo", data={"event": str(_last_event(c3)), "csrf_token": bob_token})
    assert undone.status_code in (200, 302) and events_of(c3)[-1][1] == "undo"
    with session_scope() as db:  # the model decides a pending comment (held unscored: no model files needed)
        assert list(decide_pending(db, [pending], hold_without_scoring="test").comments) == [pending]
    feedback = app.test_client().post(
        f"/api/v1/comments/{c4}/feedback",
        data=json.dumps({"label": "spam"}),
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"},
    )
    assert feedback.status_code == 200, feedback.get_data(as_text=True)
    # One event yesterday: c1's approval, as if made then.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with session_scope() as db:
        db.execute(update(ModerationEvent).where(ModerationEvent.comment_id == c1).values(created_at=yesterday))
    login(admins, admin)

    def ids(query: str) -> set[int]:
        return set(event_ids(get_page(admins, f"site={site['id']}&{query}")))

    def of(*comments: int, action: str | None = None) -> set[int]:
        with session_scope() as db:
            stmt = select(ModerationEvent.id).where(ModerationEvent.comment_id.in_(comments))
            if action:
                stmt = stmt.where(ModerationEvent.action == action)
            return set(db.scalars(stmt))

    everything = ids("")
    assert everything == set(site_event_ids(site["id"])) == of(c1, c2, c3, c4, pending)
    assert len(everything) == 6  # approve, spam, abuse, undo, decide, feedback
    assert of(elsewhere) and not of(elsewhere) & everything  # the site filter leaves the other site out
    assert set(event_ids(get_page(admins, f"site={other_site['id']}"))) == of(elsewhere)
    assert ids(f"actor={ann['id']}") == of(c1)
    assert set(event_ids(get_page(admins, f"actor={ann['id']}"))) >= of(c1, elsewhere)  # every site of hers
    assert ids(f"actor={bob['id']}") == of(c2, c3)
    assert ids("actor=people") == of(c1, c2, c3)
    assert ids("actor=machine") == of(pending)
    assert ids("actor=blog") == of(c4)
    assert ids("status=approve") == of(c1)
    assert ids("status=reject") == of(c2, c4) | of(c3, action="reject")
    assert ids("status=hold") == of(pending) | of(c3, action="undo")
    assert ids("action=undo") == of(c3, action="undo")
    assert ids("action=feedback") == of(c4)
    today, day_before = datetime.now(UTC).date(), yesterday.date()
    assert ids(f"since={today}") == everything - of(c1)
    assert ids(f"until={day_before}") == of(c1)
    assert ids(f"since={day_before}&until={day_before}") == of(c1)
    assert ids(f"actor=people&status=reject&since={today}") == of(c2) | of(c3, action="reject")
    # Values that cannot be filters are ignored, not errors.
    for bad in ("actor=nobody", "actor=-1", "status=maybe", "action=drop", "since=yesterday", "until=2026-13-40"):
        assert ids(bad) == everything, bad
    assert set(event_ids(get_page(admins, f"site=x{site['id']}&actor={bob['id']}"))) >= of(c2, c3)
    page = get_page(admins, f"site={site['id']}&actor={bob['id']}&status=reject")
    assert f'<option value="{bob["id"]}" selected>' in page and '<option value="reject" selected>' in page


def _last_event(comment_id: int) -> int:
    from service.db import session_scope
    from service.models import ModerationEvent

    with session_scope() as db:
        found = db.scalar(
            select(ModerationEvent.id)
            .where(ModerationEvent.comment_id == comment_id)
            .order_by(ModerationEvent.id.desc())
        )
        assert found is not None
        return int(found)


def test_keyset_pages_give_every_event_once_while_events_are_added(app: Any) -> None:
    from service.admin.activity import PAGE_SIZE

    site = make_ui_site()
    moderator = make_user("moderator", (site["id"],))
    admin = make_user("admin")
    ids = [add_comment(site["id"], content=f"Comment {n}") for n in range(PAGE_SIZE + 10)]
    mods, admins = app.test_client(), app.test_client()
    token = login(mods, moderator)
    act(mods, token, ids, "approve")
    act(mods, token, ids[: PAGE_SIZE // 2], "spam", seen="approve")
    expected = site_event_ids(site["id"])
    assert len(expected) == PAGE_SIZE + 10 + PAGE_SIZE // 2
    login(admins, admin)

    first = get_page(admins, f"site={site['id']}")
    assert link(first, "prev") is None
    seen, pages, page = [], [first], first
    late = add_comment(site["id"], content="Acted on while the admin reads.")
    act(mods, token, [late], "approve")  # a new event above page 1: the next pages must not shift
    while (older := link(page, "next")) is not None:
        page = admins.get(older).get_data(as_text=True)
        pages.append(page)
    for p in pages:
        seen.extend(event_ids(p))
    assert seen == expected  # each once, newest first, the late one not among them
    assert [len(event_ids(p)) for p in pages] == [PAGE_SIZE, PAGE_SIZE // 2 + 10]
    # Back from the last page: the page before it, exactly.
    newer = link(pages[-1], "prev")
    assert newer is not None and "after=" in newer
    assert event_ids(admins.get(newer).get_data(as_text=True)) == event_ids(pages[-2])
    # Links keep the filters.
    assert f"site={site['id']}" in (link(first, "next") or "")


def test_hostile_comment_text_and_note_are_escaped(app: Any, tmp_path: Path) -> None:
    from classifiers import load_jsonl
    from service.db import session_scope
    from service.history_import import import_history
    from service.models import Site

    site = make_ui_site()
    moderator = make_user("moderator", (site["id"],))
    admin = make_user("admin")
    hostile = add_comment(site["id"], content="<script>alert(1)</script> and <img src=x onerror=alert(3)>")
    mods, admins = app.test_client(), app.test_client()
    act(mods, login(mods, moderator), [hostile], "spam")
    # Who ran an import is the note of its events: an operator's file name, here a hostile one.
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps({"content": "<b>bold</b> imported comment", "label": 1}), "utf-8")
    with session_scope() as db:
        stored = db.get(Site, site["id"])
        assert stored is not None
        summary = import_history(db, stored, load_jsonl(path), "spam", '<script>alert(2)</script>"><i>x.csv')
        assert summary.imported == 1
    login(admins, admin)

    page = get_page(admins, f"site={site['id']}")
    assert len(event_ids(page)) == 2
    assert "<script>alert(1)" not in page and "<script>alert(2)" not in page and "<img src=x" not in page
    assert "<b>bold" not in page and "<i>x.csv" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(3)&gt;" in page
    assert "by &lt;script&gt;alert(2)&lt;/script&gt;&#34;&gt;&lt;i&gt;x.csv" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "history import" in page
    csp = admins.get("/admin/activity").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None  # no inline script of our own either


def test_csv_download_has_the_filtered_rows_and_neutralises_formulas(app: Any, monkeypatch: Any) -> None:
    from service.admin import activity

    site = make_ui_site()
    moderator = make_user("moderator", (site["id"],))
    admin = make_user("admin")
    texts = ['=HYPERLINK("http://evil.example")', "+1+1", "-2-2", "@SUM(A1)", "\tTabbed", "\rCarriage", "plain"]
    ids = [add_comment(site["id"], content=t) for t in texts]
    mods, admins = app.test_client(), app.test_client()
    act(mods, login(mods, moderator), ids, "spam")
    login(admins, admin)

    response = admins.get(f"/admin/activity.csv?site={site['id']}&actor={moderator['id']}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True), newline="")))
    assert [int(r["event_id"]) for r in rows] == site_event_ids(site["id"])
    by_comment = {int(r["comment_id"]): r for r in rows}
    assert sorted(by_comment) == sorted(ids)
    for cid, text in zip(ids, texts, strict=True):
        row = by_comment[cid]
        assert row["comment_excerpt"] == (text if text == "plain" else "'" + text)
        assert (row["actor"], row["actor_id"], row["site"]) == (
            moderator["email"],
            f"user:{moderator['id']}",
            site["name"],
        )
        assert (row["action"], row["from"], row["to"], row["category"]) == ("reject", "hold", "reject", "spam")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row["time_utc"])
    assert activity.csv_cell("-1") == "'-1" and activity.csv_cell(None) == "" and activity.csv_cell(7) == "7"
    # Another actor's filter: none of these rows.
    other = admins.get(f"/admin/activity.csv?site={site['id']}&actor=machine").get_data(as_text=True)
    assert other.splitlines() == [",".join(activity.CSV_HEADER)]
    # Bounded: the newest rows up to the limit, and the page says how many.
    assert f"newest {activity.CSV_MAX_ROWS:,} events" in get_page(admins, f"site={site['id']}")
    monkeypatch.setattr(activity, "CSV_MAX_ROWS", 3)
    capped = list(
        csv.DictReader(io.StringIO(admins.get(f"/admin/activity.csv?site={site['id']}").get_data(as_text=True)))
    )
    assert [int(r["event_id"]) for r in capped] == site_event_ids(site["id"])[:3]
    page = get_page(admins, f"site={site['id']}")
    assert 'href="/admin/activity.csv?site=' in page


@pytest.mark.browser
def test_the_activity_page_in_a_browser_filters_and_links_to_the_comment(browser_session: Sessions) -> None:
    site = make_ui_site()
    moderator = make_user("moderator", (site["id"],))
    admin = make_user("admin")
    approved = add_comment(site["id"], content="Roses in winter need a sheltered corner.")
    rejected = add_comment(site["id"], content="Buy followers now, cheap and fast.")
    mod = browser_session()
    mod.login(moderator)
    mod.page.click(f"#c{approved} button[data-action=approve]")
    mod.page.locator(f"#c{approved} [data-role=message]").filter(has_text="approved").wait_for()
    mod.page.click(f"#c{rejected} button[data-action=spam]")
    mod.page.locator(f"#c{rejected} [data-role=message]").filter(has_text="rejected as spam").wait_for()

    s = browser_session()
    s.login(admin)
    page = s.page
    page.goto("/admin/")
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Activity").click()
    page.wait_for_url(re.compile(r".*/admin/activity$"))
    page.select_option('select[name="site"]', str(site["id"]))
    page.select_option('select[name="status"]', "approve")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(rf".*site={site['id']}.*status=approve.*"))
    rows = page.locator("tr[data-event]")
    assert rows.count() == 1
    assert moderator["email"] in (rows.first.locator("[data-role=actor]").text_content() or "")
    assert "Roses in winter" in (rows.first.locator("[data-role=excerpt]").text_content() or "")
    rows.first.locator("a[data-role=comment]").click()
    page.wait_for_url(re.compile(rf".*/moderation/comments/{approved}$"))
    assert page.get_by_role("heading", name=f"Comment #{approved}").is_visible()
    assert s.dialogs == [] and s.errors == [] and mod.errors == []


def test_a_comments_page_names_its_actors_as_the_activity_log_does(app: Any) -> None:
    """One set of words for who acted: the comment's history said "blog" where the log says the feedback API."""
    site = make_ui_site()
    admin = make_user("admin")
    cid = add_comment(site["id"], content="Cheap watches at discount prices here.")
    feedback = app.test_client().post(
        f"/api/v1/comments/{cid}/feedback",
        data=json.dumps({"label": "spam"}),
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"},
    )
    assert feedback.status_code == 200, feedback.get_data(as_text=True)
    admins = app.test_client()
    login(admins, admin)
    detail = admins.get(f"/moderation/comments/{cid}").get_data(as_text=True)
    log = get_page(admins, f"site={site['id']}")
    for page in (detail, log):
        assert "the blog (feedback API)" in page
    assert 'data-role="decided-by"' in detail and "the blog (feedback API)</span>" in detail
