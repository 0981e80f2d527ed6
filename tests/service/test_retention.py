"""Data retention (service.retention) on the real database: what the purge deletes, erases and keeps."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from service.akismet.stats import get_stats
from service.db import session_scope
from service.models import (
    CallbackDelivery,
    Comment,
    DeletedRejectCount,
    Label,
    ModerationEvent,
    Site,
    author_email_in,
    erased_email,
)
from service.retention import purge
from tests.conftest import make_site

# The purge works on the whole database, which the test session shares: "now" is put far in the past here, so
# that only this module's comments are old enough for it.
NOW = datetime(1990, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _database_of_its_own(own_database: str) -> Iterator[None]:
    """Each test's rows in a database of its own: in the shared one the session worker's sweeper re-sends every
    pending comment, and a pending row it decided between two purges was due for the second (seen once in CI)."""
    from service.config import settings

    shared = os.environ["BOUNCER_DATABASE_URL"]
    os.environ["BOUNCER_DATABASE_URL"] = own_database
    settings.cache_clear()
    yield
    os.environ["BOUNCER_DATABASE_URL"] = shared
    settings.cache_clear()


@pytest.fixture(autouse=True)
def retain(bouncer_env: dict[str, str]) -> Iterator[Callable[..., None]]:
    """The default retention for every test here, and a way to set BOUNCER_RETAIN_<KIND>_DAYS for one test."""
    from service.config import settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("BOUNCER_RETAIN_")}
    for key in saved:  # the session turns retention off (tests/conftest.py): here the defaults apply
        del os.environ[key]
    settings.cache_clear()

    def set_days(**days: int) -> None:
        for kind, n in days.items():
            os.environ[f"BOUNCER_RETAIN_{kind.upper()}_DAYS"] = str(n)
        settings.cache_clear()

    yield set_days
    for key in [k for k in os.environ if k.startswith("BOUNCER_RETAIN_")]:
        del os.environ[key]
    os.environ.update(saved)
    settings.cache_clear()


def add(
    site_id: int,
    days_old: float,
    *,
    decision: str | None = "reject",
    decided_by: str | None = "worker",
    label: str | None = None,
    superseded: bool = False,
    delivery: str | None = "delivered",
    email: str = "",
    now: datetime = NOW,
    **fields: Any,
) -> int:
    """A comment as the scorer (or a human, with ``label``) left it, with its audit event and callback delivery."""
    at = now - timedelta(days=days_old)
    values: dict[str, Any] = {
        "site_id": site_id,
        "content": "Cheap watches at replica-deals.example, click here",
        "author_name": "Deals",
        "author_email": email,
        "author_ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "referrer": "https://blog.example/post?utm=1",
        "status": "decided" if decision else "pending",
        "decision": decision,
        "auto_decision": decision if decided_by in ("worker", "web") else None,
        "category": "spam" if decision == "reject" else None,
        "decided_by": decided_by,
        "received_at": at,
        "decided_at": at if decision else None,
        **fields,
    }
    with session_scope() as session:
        comment = Comment(**values)
        session.add(comment)
        session.flush()
        if decision:
            event = ModerationEvent(
                comment_id=comment.id, site_id=site_id, actor="model", action="decide", to_decision=decision
            )
            session.add(event)
            session.flush()
            if delivery:
                session.add(
                    CallbackDelivery(
                        comment_id=comment.id, site_id=site_id, event_id=event.id, status=delivery, created_at=at
                    )
                )
        if label:
            session.add(
                Label(
                    comment_id=comment.id,
                    site_id=site_id,
                    label=label,
                    source="moderator",
                    actor="user:1",
                    superseded=superseded,
                )
            )
        return comment.id


def existing(ids: list[int]) -> set[int]:
    with session_scope() as session:
        return set(session.scalars(select(Comment.id).where(Comment.id.in_(ids))))


def rows_of(model: Any, comment_ids: list[int]) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.comment_id.in_(comment_ids))) or 0


def test_old_automatic_rejects_go_with_their_events_and_deliveries_and_the_rest_stays() -> None:
    site = make_site()["id"]
    gone = [
        add(site, 31),
        add(site, 400, decided_by="web"),  # the web process decided it (Akismet budget ran out)
        add(site, 45, label="ham", superseded=True),  # a moderator's approval, undone: nobody confirmed it
    ]
    kept = {
        "recent reject": add(site, 29),
        "held, waiting for a moderator": add(site, 400, decision="hold"),
        "pending": add(site, 400, decision=None, decided_by=None),
        "approved": add(site, 400, decision="approve"),
        "rejected by a moderator": add(site, 400, decided_by="moderator:1", label="spam"),
        "confirmed by the blog": add(site, 400, decided_by="blog", label="spam"),
        "automatic reject with a current label": add(site, 400, label="spam"),
        "callback still on its way": add(site, 400, delivery="pending"),
    }
    assert rows_of(ModerationEvent, gone) == 3 and rows_of(CallbackDelivery, gone) == 3

    result = purge(now=NOW)

    assert result.counts["rejected_comments"] == 3 and result.complete
    assert existing(gone + list(kept.values())) == set(kept.values())
    assert rows_of(ModerationEvent, gone) == 0 and rows_of(CallbackDelivery, gone) == 0 and rows_of(Label, gone) == 0
    assert rows_of(Label, list(kept.values())) == 3
    # Akismet's get-stats still counts the deleted spam answers, by the day they came in
    with session_scope() as session:
        stmt = select(DeletedRejectCount.day, DeletedRejectCount.comments).where(DeletedRejectCount.site_id == site)
        days = {day: n for day, n in session.execute(stmt)}
    assert sum(days.values()) == 3 and (NOW - timedelta(days=31)).strftime("%Y-%m-%d") in days
    with session_scope() as session:
        site_row = session.get(Site, site)
        assert site_row is not None
        # deleted 3 + the kept automatic rejects (recent, labelled, undelivered) + the hold; approve is ham
        everything = get_stats(session, site_row, "all", now=NOW)
        assert (everything["spam"], everything["ham"]) == (7, 1)
        last_60_days = get_stats(session, site_row, "60-days", now=NOW)  # the 400-day-old ones are outside
        assert last_60_days["spam"] == 3

    again = purge(now=NOW)  # idempotent: nothing left to do
    assert again.counts == {"rejected_comments": 0, "personal_data": 0, "callback_deliveries": 0}


def test_ids_of_purged_rows_are_not_given_to_new_ones() -> None:
    """A purged comment's id is known outside (the blog's callbacks, API answers, Akismet, moderation URLs): the
    next comment must not get it, nor its events, labels and deliveries theirs (SQLite reused them before 0008)."""
    site = make_site()["id"]
    add(site, 400, decision="hold")
    newest = add(site, 31, label="ham", superseded=True)  # the newest of everything, and due for the purge
    with session_scope() as session:
        old = {
            model: session.scalars(select(model.id).where(model.comment_id == newest)).one()
            for model in (ModerationEvent, CallbackDelivery, Label)
        }

    assert purge(now=NOW).counts["rejected_comments"] == 1 and existing([newest]) == set()

    after = add(site, 1, label="spam")
    assert after > newest
    with session_scope() as session:
        for model, old_id in old.items():
            assert session.scalars(select(model.id).where(model.comment_id == after)).one() > old_id, model


def test_personal_data_of_old_comments_is_erased_and_the_author_is_still_recognised() -> None:
    from service.moderation.queries import author_history
    from service.retraining import collect_labels

    site = make_site()["id"]
    approved = add(site, 120, decision="approve", email="Ann.Reader@Gmail.com", delivery=None)
    labelled = add(site, 120, decided_by="moderator:1", label="spam", email="x@@broken", delivery=None)
    held = add(site, 91, decision="hold", email="")
    pending = add(site, 120, decision=None, decided_by=None, email="p@example.org")
    recent = add(site, 89, decision="approve", email="ann.reader@gmail.com")

    result = purge(now=NOW)

    assert result.counts["personal_data"] == 3
    with session_scope() as session:
        rows = {c.id: c for c in session.scalars(select(Comment).where(Comment.site_id == site))}
        for cid in (approved, labelled, held):
            c = rows[cid]
            assert (c.author_ip, c.user_agent, c.referrer) == ("", "", ""), cid
            assert c.personal_data_erased_at is not None
            # what training and the UI need stays
            assert c.content.startswith("Cheap watches") and c.author_name == "Deals" and c.decision
        assert rows[approved].author_email == erased_email("ann.reader@gmail.com")
        assert rows[approved].author_email.startswith("erased-") and rows[approved].author_email.endswith("@gmail.com")
        assert "ann" not in rows[approved].author_email
        assert rows[labelled].author_email.endswith("@invalid")  # the models still read it as an invalid address
        assert rows[held].author_email == ""
        for cid in (pending, recent):  # a pending comment's scorer needs them; a recent one is not due yet
            c = rows[cid]
            assert c.author_ip == "203.0.113.7" and c.referrer and c.personal_data_erased_at is None
        assert rows[recent].author_email == "ann.reader@gmail.com"

        # the author behind the erased address is still found: author history and the trusted-author rule
        history = author_history(session, [rows[recent]])
        assert history[recent].approved == 1
        found = session.scalars(select(Comment.id).where(author_email_in(["ANN.reader@gmail.com "]))).all()
        assert set(found) == {approved, recent}
        # the label's comment is still training data
        assert labelled in {r.comment_id for r in collect_labels(session, "spam", [site])}

    assert purge(now=NOW).counts["personal_data"] == 0  # erasing twice changes nothing


def test_retention_zero_keeps_everything(retain: Callable[..., None]) -> None:
    retain(rejected=0, personal_data=0, callbacks=0)
    site = make_site()["id"]
    ids = [add(site, 5000), add(site, 5000, decision="approve", email="a@example.org")]

    result = purge(now=NOW)

    assert result.counts == {"rejected_comments": 0, "personal_data": 0, "callback_deliveries": 0}
    assert result.as_dict()["before"] == {"rejected_comments": None, "personal_data": None, "callback_deliveries": None}
    assert existing(ids) == set(ids) and rows_of(CallbackDelivery, ids) == 2
    with session_scope() as session:
        assert session.scalar(select(Comment.author_email).where(Comment.id == ids[1])) == "a@example.org"


def test_finished_callback_deliveries_go_after_their_own_retention(retain: Callable[..., None]) -> None:
    retain(rejected=0, personal_data=0, callbacks=30)
    site = make_site()["id"]
    delivered, failed = add(site, 31, decision="approve"), add(site, 31, decision="hold", delivery="failed")
    waiting, recent = add(site, 31, decision="approve", delivery="pending"), add(site, 29, decision="approve")

    assert purge(now=NOW).counts["callback_deliveries"] == 2

    assert rows_of(CallbackDelivery, [delivered, failed]) == 0
    assert rows_of(CallbackDelivery, [waiting, recent]) == 2
    assert existing([delivered, failed, waiting, recent]) == {delivered, failed, waiting, recent}
    assert rows_of(ModerationEvent, [delivered, failed]) == 2  # the audit log stays with its comment


def test_a_dry_run_changes_nothing_and_counts_what_the_purge_then_removes() -> None:
    site = make_site()["id"]
    for _ in range(3):
        add(site, 200)  # a reject: deleted, so neither erased nor its delivery counted on its own
    add(site, 200, decision="approve", email="a@example.org")  # erased; its delivery deleted
    add(site, 40, decision="approve", delivery="failed")  # its delivery deleted only
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Comment).where(Comment.site_id == site))

    dry = purge(now=NOW, dry_run=True)

    expected = {"rejected_comments": 3, "personal_data": 1, "callback_deliveries": 2}
    assert dry.counts == expected and dry.dry_run
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Comment).where(Comment.site_id == site)) == before
        erased = select(func.count()).where(Comment.site_id == site, Comment.personal_data_erased_at.is_not(None))
        assert session.scalar(erased) == 0
    assert purge(now=NOW).counts == expected


def test_chunks_a_bounded_run_and_two_purges_at_once() -> None:
    site = make_site()["id"]
    rejects = [add(site, 60, delivery=None) for _ in range(11)]
    kept = [add(site, 100, decision="approve", email=f"r{i}@example.org", delivery=None) for i in range(7)]

    bounded = purge(now=NOW, chunk_size=3, max_chunks=2)  # the hourly task's budget, in small
    assert bounded.counts["rejected_comments"] == 6 and bounded.counts["personal_data"] == 6
    assert not bounded.complete and len(existing(rejects)) == 5

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(purge(now=NOW, chunk_size=2))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and all(r.complete for r in results)
    # each row went to exactly one of them
    assert sum(r.counts["rejected_comments"] for r in results) == 5
    assert sum(r.counts["personal_data"] for r in results) == 1
    assert existing(rejects) == set() and existing(kept) == set(kept)
    with session_scope() as session:
        emails = session.scalars(select(Comment.author_email).where(Comment.id.in_(kept))).all()
    assert sorted(emails) == sorted(erased_email(f"r{i}@example.org") for i in range(7))


def test_purged_rows_are_a_prometheus_counter() -> None:
    from service.metrics import BouncerCollector

    def purged() -> dict[str, float]:
        family = next(m for m in BouncerCollector().collect() if m.name == "bouncer_purged_rows")
        return {s.labels["kind"]: s.value for s in family.samples if s.name == "bouncer_purged_rows_total"}

    site = make_site()["id"]
    add(site, 60)
    add(site, 100, decision="approve")
    start = purged()
    assert set(start) == {"rejected_comments", "personal_data", "callback_deliveries"}

    purge(now=NOW)

    end = purged()
    assert end["rejected_comments"] - start["rejected_comments"] == 1
    assert end["personal_data"] - start["personal_data"] == 1


def test_the_cli_prints_what_it_removed_or_would_remove(app: Any) -> None:
    from click.testing import CliRunner

    from service.cli import main

    runner = CliRunner()
    site = make_site()["id"]
    old_id = add(site, 60, now=datetime.now(UTC), delivery=None)  # the CLI purges as of now: old by the real clock

    dry = runner.invoke(main, ["purge", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    out = json.loads(dry.stdout)
    assert out["dry_run"] is True and out["rejected_comments"] >= 1 and out["complete"] is True
    assert set(out["before"]) == {"rejected_comments", "personal_data", "callback_deliveries"}
    assert existing([old_id]) == {old_id}

    real = runner.invoke(main, ["purge"])
    assert real.exit_code == 0, real.output
    assert json.loads(real.stdout)["rejected_comments"] >= 1 and existing([old_id]) == set()


def test_beat_runs_the_purge_hourly() -> None:
    from celery.schedules import crontab

    from service.celery_setup import celery_config

    entries = [e for e in celery_config()["beat_schedule"].values() if e["task"] == "bouncer.purge"]
    assert len(entries) == 1
    schedule = entries[0]["schedule"]
    assert isinstance(schedule, crontab) and schedule.hour == set(range(24)) and len(schedule.minute) == 1


def test_the_purge_task_runs_in_a_real_worker(
    bouncer_env: dict[str, str], app: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A worker of its own: the session's worker has retention off (tests/conftest.py)."""
    from tests.conftest import START_TIMEOUT, WorkerProcess
    from workers.tasks import purge as purge_task

    old_id = add(make_site()["id"], 60, now=datetime.now(UTC), delivery=None)

    # Its own queue too: the session's worker (retention off) must not be the one that takes the task.
    # And this test's database (``_database_of_its_own``).
    retaining = {
        **bouncer_env,
        "BOUNCER_DATABASE_URL": os.environ["BOUNCER_DATABASE_URL"],
        "BOUNCER_RETAIN_REJECTED_DAYS": "30",
    }
    log_path = tmp_path_factory.mktemp("logs") / "purge-worker.log"
    worker = WorkerProcess(retaining, log_path, beat=False, queues="retention-test", name="retention")
    worker.start()
    try:
        purge_task.apply_async(queue="retention-test")
        deadline = time.monotonic() + START_TIMEOUT  # ping may have been the session's worker: this one may still load
        while existing([old_id]) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.kill(signal.SIGTERM)
    assert existing([old_id]) == set()
