"""One retrain at a time and a dead worker noticed, both kept by the database: a Redis that restarts empty ends no
live run and lets no second retrain start; two starts at the same moment make one running run; the heartbeat thread
keeps a long step alive and stops with its run; a run ended under a live worker stops before it registers anything.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from service import retraining
from service.db import session_scope
from service.models import RetrainRun
from service.scoring import registry
from tests.conftest import REPO, make_site

SAMPLE = 0.02  # of the base rows: these runs never train on them


def _run(run_id: int) -> RetrainRun:
    with session_scope() as db:
        run = db.get(RetrainRun, run_id)
        assert run is not None
        return run


def _heartbeat(run_id: int) -> datetime | None:
    with session_scope() as db:
        return db.scalar(select(RetrainRun.heartbeat_at).where(RetrainRun.id == run_id))


def _options() -> retraining.RetrainOptions:
    return retraining.RetrainOptions(base_fraction=SAMPLE, site_ids=(make_site()["id"],))


class HeldTrainer:
    """A trainer that waits in the training step until the test lets it go, then fails (the tests are about the
    run, not the model)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        self.entered.set()
        assert self.release.wait(120), "the test never released the trainer"
        raise RuntimeError("released by the test")


class Retrain(threading.Thread):
    """``retraining.retrain`` in a thread of its own (a worker), keeping what it returned or raised."""

    def __init__(self, kind: str, run_id: int, trainer: Any, barrier: threading.Barrier | None = None) -> None:
        super().__init__(daemon=True)
        self.kind, self.run_id, self.trainer, self.barrier = kind, run_id, trainer, barrier
        self.options = _options()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.barrier is not None:
                self.barrier.wait(30)
            retraining.retrain(self.kind, run_id=self.run_id, options=self.options, trainer=self.trainer)
        except BaseException as exc:
            self.error = exc


@pytest.fixture
def empty_redis_restart(
    forgetful_redis: dict[str, Any], bouncer_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """This process talks to a Redis of its own that keeps nothing over a restart (the session's Redis and worker
    are left alone); the code before 0007 kept its retrain lock in it."""
    from service import redis_bus
    from service.config import settings

    monkeypatch.setenv("BOUNCER_REDIS_URL", f"redis://127.0.0.1:{forgetful_redis['port']}/0")
    settings.cache_clear()
    redis_bus.reset_clients()
    yield forgetful_redis
    monkeypatch.undo()
    settings.cache_clear()
    redis_bus.reset_clients()


def test_a_redis_restart_neither_ends_a_live_run_nor_lets_a_second_start(
    bouncer_env: dict[str, str], admin_client: tuple[Any, str], empty_redis_restart: dict[str, Any]
) -> None:
    trainer = HeldTrainer()
    live = Retrain("spam", retraining.create_run("spam", "admin"), trainer)
    live.start()
    try:
        assert trainer.entered.wait(120), live.error
        empty_redis_restart["stop"]()
        empty_redis_restart["start"]()  # everything in Redis is gone

        client, _token = admin_client
        page = client.get(f"/admin/retraining/runs/{live.run_id}")
        assert page.status_code == 200 and page.headers.get("Refresh")  # still refreshing: the run is running
        assert client.get("/admin/retraining").status_code == 200
        queued = retraining.create_run("abuse", "admin")  # the next retrain ends no live run either
        assert _run(live.run_id).status == "running"

        with pytest.raises(retraining.RetrainBusy, match=f"run #{live.run_id}"):
            retraining.retrain("abuse", run_id=queued, options=_options())  # no second retrain beside it
        assert _run(queued).status == "queued"
        retraining.mark_failed(queued, "cleaned up by the test")
        with pytest.raises(retraining.RetrainBusy):
            retraining.retrain("abuse", "schedule", options=_options())
        assert _run(live.run_id).status == "running"
    finally:
        trainer.release.set()
        live.join(60)
    assert live.error is None
    run = _run(live.run_id)
    assert (run.status, run.error, run.running_slot) == ("failed", "RuntimeError: released by the test", None)


def test_two_starts_at_the_same_moment_make_one_running_run(bouncer_env: dict[str, str]) -> None:
    barrier = threading.Barrier(2)
    trainers = {kind: HeldTrainer() for kind in ("spam", "abuse")}
    threads = [Retrain(kind, retraining.create_run(kind, "admin"), trainers[kind], barrier) for kind in trainers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while not any(tr.entered.is_set() for tr in trainers.values()) or sum(t.is_alive() for t in threads) > 1:
            assert time.monotonic() < deadline, [t.error for t in threads]
            time.sleep(0.05)
        running = [t for t in threads if _run(t.run_id).status == "running"]
        refused = [t for t in threads if isinstance(t.error, retraining.RetrainBusy)]
        assert len(running) == 1 and len(refused) == 1, [(_run(t.run_id).status, t.error) for t in threads]
        assert _run(refused[0].run_id).status == "queued"  # its task would retry it
        retraining.mark_failed(refused[0].run_id, "cleaned up by the test")
    finally:
        for tr in trainers.values():
            tr.release.set()
        for t in threads:
            t.join(60)


def test_the_database_refuses_the_second_of_two_overlapping_starts(bouncer_env: dict[str, str]) -> None:
    """No read decides it: the second start's update waits for the first transaction (PostgreSQL: on the unique
    index; SQLite: for the one writer), then the unique slot refuses it."""
    first, second = retraining.create_run("spam", "admin"), retraining.create_run("abuse", "admin")
    outcome: list[BaseException | bool] = []
    with session_scope() as db:
        assert retraining.claim_run(db, first)  # started, not committed yet

        def start_second() -> None:
            try:
                outcome.append(retraining.start_run(second))
            except BaseException as exc:
                outcome.append(exc)

        other = threading.Thread(target=start_second, daemon=True)
        other.start()
        other.join(1.0)
        assert other.is_alive() and not outcome  # waiting for the first start's transaction
    other.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], retraining.RetrainBusy), outcome
    assert f"run #{first}" in str(outcome[0])
    assert (_run(first).status, _run(second).status) == ("running", "queued")
    for run_id in (first, second):
        retraining.mark_failed(run_id, "cleaned up by the test")


def test_the_heartbeat_advances_during_a_long_step_and_stops_with_the_run(
    bouncer_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retraining, "HEARTBEAT_SECONDS", 0.2)
    seen: list[datetime | None] = []
    run_id = retraining.create_run("spam", "admin")

    def slow_trainer(*_args: Any, **_kwargs: Any) -> Any:
        seen.append(_heartbeat(run_id))  # written by the step's progress
        time.sleep(1.5)  # a long step: no progress for several intervals
        seen.append(_heartbeat(run_id))
        raise RuntimeError("done sleeping")

    assert retraining.retrain("spam", run_id=run_id, options=_options(), trainer=slow_trainer) == run_id
    first, last = seen
    assert first is not None and last is not None
    assert (last - first).total_seconds() >= 0.8, seen  # the thread wrote it meanwhile
    run = _run(run_id)
    assert (run.status, run.error, run.running_slot) == ("failed", "RuntimeError: done sleeping", None)
    after = _heartbeat(run_id)
    time.sleep(1.0)
    assert _heartbeat(run_id) == after  # stopped with the run
    assert not [t for t in threading.enumerate() if t.name.startswith("retrain-heartbeat-")]


def test_a_run_ended_under_a_live_worker_stops_before_it_registers_anything(bouncer_env: dict[str, str]) -> None:
    """No heartbeat reached the database for the dead-after age (a paused worker, the database away), so the run was
    ended as interrupted and the next may have started: the worker must not register or promote a candidate."""
    run_id = retraining.create_run("spam", "admin")
    versions = {v.version for v in registry().versions("spam")}

    def cut_off_trainer(*_args: Any, **_kwargs: Any) -> Any:
        with session_scope() as db:
            db.execute(
                update(RetrainRun).where(RetrainRun.id == run_id).values(heartbeat_at=datetime(2020, 1, 1, tzinfo=UTC))
            )
            retraining.fail_interrupted_runs(db)
        return object(), {"thresholds": {"approve_below": 0.3, "reject_at": 0.9}}

    retraining.retrain("spam", run_id=run_id, options=_options(), trainer=cut_off_trainer)
    run = _run(run_id)
    assert run.status == "failed" and run.error.startswith("RunInterrupted: the run was ended as interrupted"), run
    assert run.candidate_version is None and run.running_slot is None
    assert {v.version for v in registry().versions("spam")} == versions


def test_a_worker_process_killed_mid_run_is_noticed_once_its_heartbeat_is_old(
    bouncer_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real process runs the retrain (beating every 0.2 s) and is killed with SIGKILL in the training step: its
    heartbeat stops with it, and once older than the dead-after age the next retrain ends the run and starts."""
    run_id = retraining.create_run("spam", "admin")
    code = (
        "import sys, time\n"
        "from service import retraining\n"
        "retraining.HEARTBEAT_SECONDS = 0.2\n"
        "def trainer(*args, **kwargs):\n"
        "    print('training', flush=True)\n"
        "    time.sleep(600)\n"
        f"options = retraining.RetrainOptions(base_fraction={SAMPLE}, site_ids=({make_site()['id']},))\n"
        f"retraining.retrain('spam', run_id={run_id}, options=options, trainer=trainer)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"training\n"
            first = _heartbeat(run_id)
            time.sleep(0.6)
            assert _heartbeat(run_id) != first  # alive and beating in a step without progress
        finally:
            proc.kill()
    assert _run(run_id).status == "running"  # killed: nothing in the process could end its run
    monkeypatch.setattr(retraining, "DEAD_AFTER_SECONDS", 1.0)
    time.sleep(1.5)
    again = retraining.create_run("spam", "admin")
    run = _run(run_id)
    assert (run.status, run.error, run.running_slot) == ("failed", retraining.INTERRUPTED, None)
    assert retraining.start_run(again)
    retraining.mark_failed(again, "cleaned up by the test")
