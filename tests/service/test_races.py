"""Races between the actors that change a comment (moderators, the blog's feedback, the retention purge), run
really at once on the real database: one side's transaction is held open while the other runs into it."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from service.auth.session import CurrentUser
from service.db import engine, session_scope
from service.human_decisions import apply_label
from service.models import Comment, Label, ModerationEvent
from tests.conftest import decide_events, make_site

# The purge's "now": far in the past, so that only comments made here are old enough for it.
NOW = datetime(1990, 6, 1, 12, 0, tzinfo=UTC)
# Long enough for the other side to have read what it reads and be waiting on the held transaction's lock.
SETTLE_SECONDS = 0.7


@pytest.fixture(autouse=True)
def _database_of_its_own(own_database: str) -> Iterator[None]:
    """Each test's rows in a database of its own: the session's worker, sweeper and purge never touch them."""
    from service.config import settings

    saved = {k: os.environ.get(k) for k in ("BOUNCER_DATABASE_URL", "BOUNCER_RETAIN_REJECTED_DAYS")}
    os.environ["BOUNCER_DATABASE_URL"] = own_database
    os.environ["BOUNCER_RETAIN_REJECTED_DAYS"] = "30"
    settings.cache_clear()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    settings.cache_clear()


def add(site_id: int, *, decision: str, category: str | None = None, days_old: float = 60) -> int:
    """A comment the scorer decided ``days_old`` days before NOW, with its decide event."""
    at = NOW - timedelta(days=days_old)
    with session_scope() as session:
        comment = Comment(
            site_id=site_id,
            content="Cheap watches at replica-deals.example, click here",
            author_name="Deals",
            status="decided",
            decision=decision,
            auto_decision=decision,
            category=category,
            decided_by="worker",
            received_at=at,
            decided_at=at,
        )
        session.add(comment)
        session.flush()
        session.add(
            ModerationEvent(
                comment_id=comment.id, site_id=site_id, actor="model", action="decide", to_decision=decision
            )
        )
        return comment.id


def admin(user_id: int = 1) -> CurrentUser:
    return CurrentUser(user_id, f"m{user_id}@example.org", "admin", frozenset())


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` in a thread; the dict gets its ``result`` or its ``error``."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = target()
        except BaseException as exc:  # reported by the test, not lost in the thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


class HeldCommit:
    """Holds the first commit of the thread that calls ``arm()``: its writes are made (and their locks taken) but
    not committed until ``release()``, so another actor runs into them, as it would at the worst moment.

    With ``after``, the first commit after a statement beginning so (a web request's reads before it commit too).
    """

    def __init__(self, after: str = "") -> None:
        self.reached, self.go = threading.Event(), threading.Event()
        self.thread: int | None = None
        self.after, self.wrote = after.upper(), not after
        self.engine = engine()
        event.listen(self.engine, "commit", self._on_commit)
        event.listen(self.engine, "before_cursor_execute", self._on_execute)

    def arm(self) -> None:
        self.thread = threading.get_ident()

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == self.thread and statement.lstrip().upper().startswith(self.after):
            self.wrote = True

    def _on_commit(self, _conn: Any) -> None:
        if threading.get_ident() == self.thread and self.wrote:
            self.thread = None  # the first commit only
            self.reached.set()
            assert self.go.wait(60), "the held commit was never released"

    def release(self) -> None:
        self.go.set()

    def remove(self) -> None:
        self.go.set()
        event.remove(self.engine, "commit", self._on_commit)
        event.remove(self.engine, "before_cursor_execute", self._on_execute)


@pytest.fixture
def held_commit() -> Iterator[HeldCommit]:
    held = HeldCommit()
    yield held
    held.remove()


def purge_held(held: HeldCommit) -> tuple[threading.Thread, dict[str, Any]]:
    """The real retention purge, its first chunk's DELETE made and its commit held."""
    from service.retention import purge

    def run() -> Any:
        held.arm()
        return purge(now=NOW)

    thread, out = in_thread(run)
    assert held.reached.wait(30), f"the purge did not reach its commit: {out}"
    return thread, out


def existing(ids: list[int]) -> set[int]:
    with session_scope() as session:
        return set(session.scalars(select(Comment.id).where(Comment.id.in_(ids))))


def test_a_moderator_approving_a_reject_the_purge_is_deleting_is_told_and_the_rest_of_the_bulk_stays(
    held_commit: HeldCommit,
) -> None:
    """The purge deletes an old automatic reject while a moderator bulk-approves it with a held comment: the
    purge's DELETE came first, so the reject is gone, the moderator is told so, and the other comment of the
    bulk is approved (it was a 500 that rolled back the whole bulk)."""
    from service.moderation.actions import moderate

    site = make_site()["id"]
    purged = add(site, decision="reject", category="spam")
    held = add(site, decision="hold", days_old=0)

    purger, purge_out = purge_held(held_commit)
    moderator, out = in_thread(lambda: moderate(admin(), [(held, "hold"), (purged, "reject")], "approve"))
    time.sleep(SETTLE_SECONDS)  # the moderator has read both comments and waits on the purge's lock
    held_commit.release()
    purger.join(60)
    moderator.join(60)

    assert "error" not in purge_out, purge_out
    assert "error" not in out, f"the moderator's bulk action failed: {out['error']!r}"
    results = {r.comment_id: r for r in out["result"]}
    assert results[held].applied and results[held].decision == "approve"
    assert not results[purged].applied and results[purged].message == "this comment no longer exists"
    assert existing([purged, held]) == {held}
    with session_scope() as session:  # nothing of the deleted comment was written: no label, no event
        assert session.scalar(select(func.count()).select_from(Label).where(Label.comment_id == purged)) == 0
        approved = session.get(Comment, held)
        assert approved is not None and approved.decision == "approve" and approved.decided_by == "user:1"


def test_blog_feedback_on_a_comment_the_purge_is_deleting_answers_404(client: Any, held_commit: HeldCommit) -> None:
    """The blog labels an old automatic reject as the purge deletes it: ``no such comment`` (it was a 500)."""
    keys = make_site()
    purged = add(keys["id"], decision="reject", category="spam")

    purger, purge_out = purge_held(held_commit)
    blog, out = in_thread(
        lambda: client.post(
            f"/api/v1/comments/{purged}/feedback",
            data=json.dumps({"label": "spam"}),
            headers={"Authorization": f"Bearer {keys['api_key']}", "Content-Type": "application/json"},
        )
    )
    time.sleep(SETTLE_SECONDS)
    held_commit.release()
    purger.join(60)
    blog.join(60)

    assert "error" not in purge_out, purge_out
    assert "error" not in out, f"the feedback request raised: {out['error']!r}"
    response = out["result"]
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "not_found"
    assert existing([purged]) == set()


def test_akismet_submit_spam_of_a_comment_the_purge_is_deleting_stores_the_report(
    client: Any, held_commit: HeldCommit
) -> None:
    """submit-spam by guid of an old automatic reject the purge deletes meanwhile: the report is stored labelled,
    as one that found no comment (it was a 500 and the blog's word was lost)."""
    keys = make_site()
    purged = add(keys["id"], decision="reject", category="spam")

    purger, purge_out = purge_held(held_commit)
    form = {
        "api_key": keys["akismet_key"],
        "blog": "https://blog.example",
        "user_ip": "198.51.100.9",
        "guid": str(purged),
        "comment_content": "Cheap watches at replica-deals.example, click here",
        "comment_author": "Deals",
    }
    blog, out = in_thread(lambda: client.post("/1.1/submit-spam", data=form))
    time.sleep(SETTLE_SECONDS)
    held_commit.release()
    purger.join(60)
    blog.join(60)

    assert "error" not in purge_out, purge_out
    assert "error" not in out, f"submit-spam raised: {out['error']!r}"
    response = out["result"]
    assert response.status_code == 200 and response.get_data(as_text=True).startswith("Thanks")
    assert purge_out["result"].counts["rejected_comments"] == 1
    with session_scope() as session:
        stored = session.scalars(select(Comment).where(Comment.site_id == keys["id"])).one()
        assert (stored.decision, stored.category, stored.decided_by) == ("reject", "spam", "akismet")
        labels = session.scalars(select(Label.label).where(Label.comment_id == stored.id)).all()
        assert list(labels) == ["spam"]


def test_an_undo_racing_the_blogs_feedback_leaves_the_blogs_decision(held_commit: HeldCommit) -> None:
    """A moderator rejects a held comment as spam and undoes it just as the blog reports it as spam itself: the
    blog's feedback is a later change, so the undo must leave the comment alone (it put the comment back to hold
    under the blog's current spam label, the feedback's event silently overridden)."""
    from service.moderation.actions import moderate, undo

    site = make_site()["id"]
    cid = add(site, decision="hold", days_old=0)
    [rejected] = moderate(admin(), [(cid, "hold")], "spam")
    undone = rejected.event_id
    assert rejected.applied and undone is not None

    def feedback() -> Any:
        held_commit.arm()
        with session_scope() as session:
            comment = session.get(Comment, cid)
            assert comment is not None
            return apply_label(
                session, comment, "spam", source="blog", actor="blog", action="feedback", once_per_actor=True
            )

    blog, blog_out = in_thread(feedback)
    assert held_commit.reached.wait(30), blog_out
    moderator, out = in_thread(lambda: undo(admin(), [undone]))
    time.sleep(SETTLE_SECONDS)  # the undo has looked for later events (none committed yet) and waits on the lock
    held_commit.release()
    blog.join(60)
    moderator.join(60)

    assert "error" not in blog_out and blog_out["result"].applied, blog_out
    assert "error" not in out, out
    [result] = out["result"]
    assert not result.applied, "the undo overrode the blog's feedback"
    with session_scope() as session:
        comment = session.get(Comment, cid)
        assert comment is not None
        assert (comment.decision, comment.category, comment.decided_by) == ("reject", "spam", "blog")
        current = session.scalars(select(Label).where(Label.comment_id == cid, Label.superseded.is_(False))).all()
        assert [(label.label, label.source) for label in current] == [("spam", "blog")]


def test_two_bulk_actions_on_the_same_comments_in_opposite_orders() -> None:
    """Two moderators bulk-act on the same held comments at once, each list in its own order: each comment is
    decided by exactly one of them, and neither request fails (on PostgreSQL they deadlocked, and one was a 500)."""
    from service.moderation.actions import moderate

    site = make_site()["id"]
    ids = [add(site, decision="hold", days_old=0) for _ in range(60)]
    start = threading.Barrier(2)

    def bulk(user: CurrentUser, order: list[int], action: str) -> Any:
        start.wait(10)
        return moderate(user, [(cid, "hold") for cid in order], action)

    a, a_out = in_thread(lambda: bulk(admin(1), ids, "approve"))
    b, b_out = in_thread(lambda: bulk(admin(2), ids[::-1], "spam"))
    a.join(120)
    b.join(120)

    assert "error" not in a_out and "error" not in b_out, (a_out.get("error"), b_out.get("error"))
    won = {r.comment_id for r in a_out["result"] if r.applied} | {r.comment_id for r in b_out["result"] if r.applied}
    both = {r.comment_id for r in a_out["result"] if r.applied} & {r.comment_id for r in b_out["result"] if r.applied}
    assert won == set(ids) and not both
    with session_scope() as session:
        per_comment = dict(
            session.execute(
                select(ModerationEvent.comment_id, func.count())
                .where(ModerationEvent.comment_id.in_(ids), ModerationEvent.actor.like("user:%"))
                .group_by(ModerationEvent.comment_id)
            ).all()
        )
    assert per_comment == dict.fromkeys(ids, 1)


def test_blog_feedback_on_a_comment_the_worker_is_deciding_says_what_it_changed(held_commit: HeldCommit) -> None:
    """The blog labels a pending comment as spam while the worker decides it (its commit held): one decide event,
    the blog's decision last, and the feedback's event says it changed the worker's hold (it said it changed
    nothing, the decision it had read before the worker's commit)."""
    from service.decisions.engine import decide_pending

    site = make_site()["id"]
    with session_scope() as session:
        pending = Comment(site_id=site, content="Nice post, see my site", author_name="Deals", status="pending")
        session.add(pending)
        session.flush()
        cid = pending.id

    def worker() -> Any:
        held_commit.arm()
        with session_scope() as session:
            return decide_pending(session, [cid], hold_without_scoring="held for this test")

    scorer, scorer_out = in_thread(worker)
    assert held_commit.reached.wait(30), scorer_out

    def feedback() -> Any:
        with session_scope() as session:
            comment = session.get(Comment, cid)
            assert comment is not None and comment.status == "pending"  # read before the worker's commit
            return apply_label(
                session, comment, "spam", source="blog", actor="blog", action="feedback", once_per_actor=True
            )

    blog, blog_out = in_thread(feedback)
    time.sleep(SETTLE_SECONDS)
    held_commit.release()
    scorer.join(60)
    blog.join(60)

    assert "error" not in scorer_out and cid in scorer_out["result"].comments, scorer_out
    assert "error" not in blog_out and blog_out["result"].applied, blog_out
    assert decide_events([cid]) == {cid: 1}
    with session_scope() as session:
        events = session.execute(
            select(ModerationEvent.action, ModerationEvent.from_decision, ModerationEvent.to_decision)
            .where(ModerationEvent.comment_id == cid)
            .order_by(ModerationEvent.id)
        ).all()
        comment = session.get(Comment, cid)
        assert comment is not None
        assert (comment.decision, comment.category, comment.decided_by) == ("reject", "spam", "blog")
    assert [tuple(e) for e in events] == [("decide", None, "hold"), ("feedback", "hold", "reject")]


@pytest.mark.parametrize(
    ("kind", "seen", "after"),
    [
        # both approved, then erased: the erase waited for the moderator
        ("personal_data", "hold", ("approve", "", True)),
        # both approved and kept: a moderator's decision is a human's word, no automatic reject to delete any more
        ("rejected_comments", "reject", ("approve", "203.0.113.7", False)),
    ],
)
def test_the_purge_and_a_bulk_action_lock_comments_in_the_same_order(
    kind: str, seen: str, after: tuple[str, str, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge erases (or deletes) old comments a moderator is bulk-approving: both lock rows in id order, so one
    waits for the other and both succeed. The purge's UPDATE (DELETE) locked rows in its plan's order (here the
    older comment, which has the higher id and the earlier place in the table, first) and on PostgreSQL deadlocked
    with the bulk action, which held the lower id and waited for the higher. (SQLite has one write lock: the purge
    waits for the bulk action's commit there.)"""
    from service.config import settings
    from service.moderation.actions import moderate
    from service.retention import purge

    site = make_site()["id"]
    lower = add(site, decision=seen, days_old=40)
    higher = add(site, decision=seen, days_old=50)  # received earlier: the purge's chunk order puts it first
    with session_scope() as session:  # the lower id's row version last in the table: a scan meets it last
        for cid in (higher, lower):
            session.execute(update(Comment).where(Comment.id == cid).values(author_ip="203.0.113.7"))

    reached, go = threading.Event(), threading.Event()
    moderator_thread: list[int] = []
    updates: list[str] = []

    def pause_before_the_second_comment(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The bulk action has locked the lower id and is about to lock the higher: the purge runs into it here.
        if threading.get_ident() in moderator_thread and statement.startswith("UPDATE comments SET status"):
            updates.append(statement)
            if len(updates) == 2:
                reached.set()
                assert go.wait(60), "the moderator was never let on"

    def bulk() -> Any:
        moderator_thread.append(threading.get_ident())
        return moderate(admin(), [(lower, seen), (higher, seen)], "approve")

    if kind == "personal_data":  # rejects go after 30 days here (the fixture); personal data stays in the session
        monkeypatch.setenv("BOUNCER_RETAIN_PERSONAL_DATA_DAYS", "30")
        settings.cache_clear()
    event.listen(engine(), "before_cursor_execute", pause_before_the_second_comment)
    try:
        moderator, out = in_thread(bulk)
        assert reached.wait(30), out
        purger, purge_out = in_thread(lambda: purge(now=NOW))
        time.sleep(SETTLE_SECONDS)  # the purge has locked what it could and waits for the moderator's row
        go.set()
        moderator.join(60)
        purger.join(60)
    finally:
        go.set()
        event.remove(engine(), "before_cursor_execute", pause_before_the_second_comment)

    assert "error" not in out, f"the moderator's bulk action failed: {out['error']!r}"
    assert "error" not in purge_out, f"the purge failed: {purge_out['error']!r}"
    assert [r.applied for r in out["result"]] == [True, True], out["result"]
    assert purge_out["result"].counts[kind] == (2 if kind == "personal_data" else 0)
    with session_scope() as session:
        rows = session.execute(
            select(Comment.decision, Comment.author_ip, Comment.personal_data_erased_at).where(
                Comment.id.in_([lower, higher])
            )
        ).all()
    assert [(decision, ip, erased is not None) for decision, ip, erased in rows] == [after] * 2


# --- two admins rotating a site's keys ---------------------------------------------------------------------------


def _admin_client(app: Any) -> tuple[Any, str]:
    """A Flask client signed in as a new admin, and its CSRF token."""
    from tests.ui.helpers import login, make_user

    client = app.test_client()
    return client, login(client, make_user("admin"))


def _rotation_form(client: Any, token: str, site_id: int) -> dict[str, str]:
    """The rotate-keys form of the site's page as the admin sees it now: it names the keys it replaces."""
    page = client.get(f"/admin/sites/{site_id}").get_data(as_text=True)
    replacing = re.search(r'name="replacing" value="([^"]+)"', page)
    assert replacing, "no rotate-keys form naming the keys it replaces"
    return {"csrf_token": token, "replacing": replacing.group(1)}


def _shown_keys(html: str) -> tuple[str, str] | None:
    api = re.search(r'data-role="api-key">([^<]+)<', html)
    akismet = re.search(r'data-role="akismet-key">([^<]+)<', html)
    return (api.group(1), akismet.group(1)) if api and akismet else None


def _stored_key_hashes(site_id: int) -> tuple[str, str]:
    from service.models import Site

    with session_scope() as session:
        site = session.get(Site, site_id)
        assert site is not None
        return site.api_key_hash, site.akismet_key_hash


def _hashes(keys: tuple[str, str]) -> tuple[str, str]:
    from service.security import hash_key

    return hash_key(keys[0]), hash_key(keys[1])


LOSER_MESSAGE = "the keys were rotated by someone else meanwhile; reload"


def test_two_admins_rotating_a_sites_keys_at_once_one_is_told_to_reload(app: Any) -> None:
    """Two admins press "Rotate API and Akismet keys" on the same site at the same moment: the first one's rotation
    is written, its commit held; the second one's runs into it. It used to overwrite the first, both were shown
    keys and the first admin's never worked. Now the second is told to reload (409) and shown no keys; the first
    admin's keys are the stored ones."""
    site_id = make_site()["id"]
    (first, first_token), (second, second_token) = _admin_client(app), _admin_client(app)
    forms = [_rotation_form(first, first_token, site_id), _rotation_form(second, second_token, site_id)]
    url = f"/admin/sites/{site_id}/rotate-keys"
    held = HeldCommit(after="UPDATE sites")
    try:

        def first_rotation() -> Any:
            held.arm()
            return first.post(url, data=forms[0])

        winner, winner_out = in_thread(first_rotation)
        assert held.reached.wait(30), f"the first rotation did not reach its commit: {winner_out}"
        loser, loser_out = in_thread(lambda: second.post(url, data=forms[1]))
        time.sleep(SETTLE_SECONDS)  # the second admin has read the site and waits on the first one's write
        held.release()
        winner.join(60)
        loser.join(60)
    finally:
        held.remove()

    assert "error" not in winner_out and "error" not in loser_out, (winner_out, loser_out)
    won, lost = winner_out["result"].get_data(as_text=True), loser_out["result"].get_data(as_text=True)
    assert (winner_out["result"].status_code, loser_out["result"].status_code) == (200, 409), lost[:2000]
    assert LOSER_MESSAGE in lost and _shown_keys(lost) is None
    shown = _shown_keys(won)
    assert shown is not None and _hashes(shown) == _stored_key_hashes(site_id)


def test_rotating_keys_from_a_page_shown_before_another_admins_rotation_is_refused(app: Any) -> None:
    """The second admin's page was shown before the first admin rotated: its form names keys that no longer exist,
    so it rotates nothing (the first admin's new keys stay), and after a reload it rotates the current ones."""
    site_id = make_site()["id"]
    (first, first_token), (second, second_token) = _admin_client(app), _admin_client(app)
    stale = _rotation_form(second, second_token, site_id)
    url = f"/admin/sites/{site_id}/rotate-keys"
    rotated = first.post(url, data=_rotation_form(first, first_token, site_id))
    first_keys = _shown_keys(rotated.get_data(as_text=True))
    assert rotated.status_code == 200 and first_keys is not None

    refused = second.post(url, data=stale)
    page = refused.get_data(as_text=True)
    assert refused.status_code == 409 and LOSER_MESSAGE in page and _shown_keys(page) is None
    assert _stored_key_hashes(site_id) == _hashes(first_keys)

    again = second.post(url, data=_rotation_form(second, second_token, site_id))  # reloaded
    second_keys = _shown_keys(again.get_data(as_text=True))
    assert again.status_code == 200 and second_keys is not None and second_keys != first_keys
    assert _stored_key_hashes(site_id) == _hashes(second_keys)
    assert second.post(url, data={"csrf_token": second_token}).status_code == 400  # a form naming no keys


def test_rotating_keys_from_the_cli_while_another_admin_rotates_them_changes_nothing() -> None:
    """``bouncer sites rotate-keys`` while another admin's rotation of the same site is being written: the command
    fails with the reason and prints no keys, instead of replacing the keys the other admin was just shown."""
    from click.testing import CliRunner

    from service.cli_admin import sites
    from service.models import Site
    from service.sites import rotate_keys

    site_id = make_site()["id"]
    held = HeldCommit(after="UPDATE sites")
    try:

        def other_admin() -> Any:
            held.arm()
            with session_scope() as session:
                site = session.get(Site, site_id)
                assert site is not None
                keys = rotate_keys(session, site)
                return keys.api_key, keys.akismet_key

        winner, winner_out = in_thread(other_admin)
        assert held.reached.wait(30), f"the other rotation did not reach its commit: {winner_out}"
        command, out = in_thread(lambda: CliRunner().invoke(sites, ["rotate-keys", str(site_id)]))
        time.sleep(SETTLE_SECONDS)
        held.release()
        winner.join(60)
        command.join(60)
    finally:
        held.remove()

    assert "error" not in winner_out and "error" not in out, (winner_out, out)
    result = out["result"]
    assert result.exit_code == 1, result.output
    assert "the keys were rotated by someone else meanwhile; nothing was changed" in result.output
    assert "api_key" not in result.output
    assert _stored_key_hashes(site_id) == _hashes(winner_out["result"])
