"""Retrain runs: a bad candidate is not promoted and the report says why; failures are visible and harmless;
one retrain at a time. These use a sample of the base data (the end-to-end test uses all of it)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from classifiers import Dataset, train_model
from service import retraining
from service.db import session_scope
from service.models import Label, RetrainRun
from service.scoring import registry
from tests.conftest import make_site
from tests.retraining.conftest import add_labelled, campaign_labels

SAMPLE = 0.15  # of the base rows: enough to train a sensible model in seconds


def _run(run_id: int) -> RetrainRun:
    with session_scope() as db:
        run = db.get(RetrainRun, run_id)
        assert run is not None
        return run


def flipped_trainer(kind: str, datasets: list[Dataset], **kwargs: Any) -> Any:
    """The same training, on every label flipped: a deliberately bad candidate."""
    return train_model(kind, [dataclasses.replace(d, labels=1 - d.labels) for d in datasets], **kwargs)


def test_bad_candidate_is_not_promoted_and_the_report_says_why(
    active_models: dict[str, str], admin_client: tuple[Any, str]
) -> None:
    site = make_site()
    add_labelled(site["id"], campaign_labels(60, 40, seed=2))
    options = retraining.RetrainOptions(base_fraction=SAMPLE, site_ids=(site["id"],))
    active = registry().active("spam").version

    run_id = retraining.retrain("spam", "test", options=options, trainer=flipped_trainer)

    run = _run(run_id)
    assert run.status == "needs_review", run.error
    assert registry().active("spam").version == active == run.active_version  # untouched
    reasons = run.report["reasons"]
    assert any(r.startswith("not better on the site holdout") for r in reasons), reasons
    assert any(r.startswith("worse on sms (test): roc_auc") for r in reasons), reasons
    labels = run.report["labels"]
    assert (labels["total"], labels["holdout"]) == (100, 20)
    assert 70 <= labels["train"] <= 80  # minus any repeat of a held-out text
    candidate = {v.version: v for v in registry().versions("spam")}[str(run.candidate_version)]
    assert candidate.status == "needs_review"
    assert candidate.manifest["retrain"]["reasons"] == reasons  # the registry keeps the report's verdict
    assert candidate.manifest["retrain"]["decision"] == "needs_review"
    assert run.progress.startswith("6/6") and run.finished_at is not None

    client, _token = admin_client
    page = client.get(f"/admin/retraining/runs/{run_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Refresh" not in page.headers
    assert "Not promoted automatically" in html and "not better on the site holdout" in html
    assert "Promote the candidate" in html and "Confusion at the thresholds" in html
    models_page = client.get("/admin/models").get_data(as_text=True)
    assert "Retrain now" in models_page and f"#{run_id}" in models_page  # the retrain panel on the models page


def test_a_failed_retrain_is_visible_and_leaves_the_active_model(active_models: dict[str, str]) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("out of memory while fitting")

    site = make_site()
    versions_before = {v.version for v in registry().versions("spam")}
    active = registry().active("spam").version
    options = retraining.RetrainOptions(base_fraction=SAMPLE, site_ids=(site["id"],))
    run_id = retraining.retrain("spam", "test", options=options, trainer=broken)

    run = _run(run_id)
    assert run.status == "failed"
    assert run.error == "RuntimeError: out of memory while fitting"
    assert run.progress.startswith("3/6 training")  # where it stopped
    assert registry().active("spam").version == active
    assert {v.version for v in registry().versions("spam")} == versions_before
    assert run.running_slot is None  # the next retrain may start


def test_labels_a_run_collected_while_it_waited_are_not_new_to_the_schedule(bouncer_env: dict[str, Any]) -> None:
    """A run queued behind another retrain collects its labels long after it was created. The nightly check counted
    new labels from the run's creation, so the labels that arrived while it waited were trained on and yet counted
    again, and could start a retrain of their own. It counts from the collection; a queued or running run moves
    nothing (it may still fail), and a label that comes after the collection is new."""
    site = make_site()
    add_labelled(site["id"], campaign_labels(6, 4, seed=3))
    with session_scope() as db:
        before = retraining.new_labels_since_last_run(db, "spam")
    run_id = retraining.create_run("spam", "schedule")
    add_labelled(site["id"], campaign_labels(3, 2, seed=4))  # while the run waits in the queue
    with session_scope() as db:
        assert retraining.new_labels_since_last_run(db, "spam") == before + 5

    while_running: list[int] = []

    def counting_trainer(kind: str, datasets: list[Dataset], **kwargs: Any) -> Any:
        with session_scope() as db:
            while_running.append(retraining.new_labels_since_last_run(db, "spam"))
        return train_model(kind, datasets, **kwargs)

    options = retraining.RetrainOptions(base_fraction=SAMPLE, site_ids=(site["id"],))
    assert retraining.retrain("spam", run_id=run_id, options=options, trainer=counting_trainer) == run_id

    run = _run(run_id)
    assert run.status in retraining.COMPLETED, run.error
    assert run.label_count == 15  # it trained on the five that came while it was queued
    assert run.last_label_id is not None
    assert while_running == [before + 5]
    with session_scope() as db:
        assert retraining.new_labels_since_last_run(db, "spam") == 0
    add_labelled(site["id"], [("cheap pills, fast delivery, no prescription", "spam")])
    with session_scope() as db:
        assert retraining.new_labels_since_last_run(db, "spam") == 1
        # An imported label is dated by its comment, years before the run, and is new to the models all the same.
        newest = db.scalar(select(func.max(Label.id)))
        db.execute(update(Label).where(Label.id == newest).values(created_at=datetime(2019, 5, 1, tzinfo=UTC)))
    with session_scope() as db:
        assert retraining.new_labels_since_last_run(db, "spam") == 1


def test_one_retrain_at_a_time(bouncer_env: dict[str, Any]) -> None:
    run_id = retraining.create_run("abuse", "admin")
    with pytest.raises(retraining.RetrainBusy):
        retraining.create_run("abuse", "admin")  # one queued run per kind
    assert retraining.start_run(run_id)  # the abuse run is running (its worker is the test)
    queued = retraining.create_run("spam", "admin")
    with pytest.raises(retraining.RetrainBusy, match=f"another retrain is running \\(run #{run_id}\\)"):
        retraining.retrain("spam", run_id=queued)
    assert _run(queued).status == "queued"  # the task retries it later
    retraining.mark_failed(queued, "cleaned up by the test")
    with pytest.raises(retraining.RetrainBusy):
        retraining.retrain("spam", "schedule")  # a run made here ends visibly
    spam_runs = _latest("spam")
    assert (spam_runs.status, spam_runs.error) == ("failed", "another retrain was running")
    assert _run(run_id).status == "running"  # the refusals took nothing from the running run
    retraining.mark_failed(run_id, "cleaned up by the test")
    assert _run(run_id).running_slot is None


def _age_heartbeat(run_id: int, seconds: float) -> None:
    """What a dead worker leaves: its run's last heartbeat ``seconds`` ago."""
    with session_scope() as db:
        db.execute(
            update(RetrainRun)
            .where(RetrainRun.id == run_id)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_a_redelivered_task_of_a_dead_worker_marks_its_run_failed(bouncer_env: dict[str, Any]) -> None:
    run_id = retraining.create_run("abuse", "admin")
    assert retraining.start_run(run_id)  # then its worker died: no more heartbeats
    assert retraining.retrain("abuse", run_id=run_id) == run_id  # redelivered at once: too early to tell
    assert _run(run_id).status == "running"
    _age_heartbeat(run_id, retraining.DEAD_AFTER_SECONDS + 1)
    assert retraining.retrain("abuse", run_id=run_id) == run_id  # redelivered later (a retry)
    run = _run(run_id)
    assert (run.status, run.error, run.running_slot) == ("failed", retraining.INTERRUPTED, None)


def test_a_run_left_running_by_a_dead_worker_does_not_block_retraining(
    bouncer_env: dict[str, Any], admin_client: tuple[Any, str]
) -> None:
    """A pool process killed mid-run (the OOM killer) leaves its run running and holding the slot, and its task comes
    back at once (task_reject_on_worker_lost): the redelivered task cannot tell yet, so once the run's heartbeat is
    older than the dead-after age, the admin pages (here), the next retrain and the schedule end it, instead of
    reporting it busy for ever, and the next retrain starts."""
    run_id = retraining.create_run("spam", "admin")
    assert retraining.start_run(run_id)  # then its worker died: no more heartbeats
    assert retraining.retrain("spam", run_id=run_id) == run_id  # the redelivered task, while the heartbeat is fresh
    assert _run(run_id).status == "running"
    other = retraining.create_run("abuse", "admin")
    with pytest.raises(retraining.RetrainBusy):
        retraining.start_run(other)  # a fresh heartbeat: for all anyone can tell, the run is alive

    _age_heartbeat(run_id, retraining.DEAD_AFTER_SECONDS + 1)
    client, _token = admin_client
    page = client.get(f"/admin/retraining/runs/{run_id}")
    assert page.status_code == 200 and "Refresh" not in page.headers
    run = _run(run_id)
    assert (run.status, run.error, run.running_slot) == ("failed", retraining.INTERRUPTED, None)
    assert retraining.start_run(other)  # the slot is free
    retraining.mark_failed(other, "cleaned up by the test")
    retraining.mark_failed(retraining.create_run("spam", "admin"), "cleaned up by the test")  # not refused as busy


def test_create_run_ends_a_run_whose_heartbeat_is_stale(bouncer_env: dict[str, Any]) -> None:
    """The next retrain (``create_run``) ends a dead run too, not only the pages: its kind is free again, and a run
    of the other kind can start at once."""
    dead = retraining.create_run("spam", "admin")
    assert retraining.start_run(dead)
    _age_heartbeat(dead, retraining.DEAD_AFTER_SECONDS + 1)
    again = retraining.create_run("spam", "admin")  # not refused: the dead run is ended first
    run = _run(dead)
    assert (run.status, run.error, run.running_slot) == ("failed", retraining.INTERRUPTED, None)
    assert retraining.start_run(again)
    retraining.mark_failed(again, "cleaned up by the test")


def test_a_run_from_before_heartbeats_is_dead_once_old(bouncer_env: dict[str, Any]) -> None:
    """A run left running by the code before 0007 has no heartbeat and no slot: it is dated by its creation."""
    run_id = retraining.create_run("abuse", "admin")
    with session_scope() as db:
        db.execute(update(RetrainRun).where(RetrainRun.id == run_id).values(status="running"))
        retraining.fail_interrupted_runs(db)
    assert _run(run_id).status == "running"  # created just now: it may be alive
    with session_scope() as db:
        old = datetime.now(UTC) - timedelta(seconds=retraining.DEAD_AFTER_SECONDS + 1)
        db.execute(update(RetrainRun).where(RetrainRun.id == run_id).values(created_at=old))
        retraining.fail_interrupted_runs(db)
    assert (_run(run_id).status, _run(run_id).error) == ("failed", retraining.INTERRUPTED)


def _latest(kind: str) -> RetrainRun:
    from sqlalchemy import select

    with session_scope() as db:
        run = db.scalar(select(RetrainRun).where(RetrainRun.kind == kind).order_by(RetrainRun.id.desc()))
        assert run is not None
        return run
