"""The sweeper with a real database and Redis of its own (in a process of its own, so no other test's worker
consumes its queue or sweeps its comments): what it re-enqueues, and that it does not flood the broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REPO, free_port

# Runs in the child: a fresh database, pending comments left by a lost task, then sweeps while nobody consumes.
SCRIPT = """
import json, sys
from datetime import UTC, datetime, timedelta
import redis
from service.app import create_app
from service.db import session_scope
from service.migrate import upgrade
from service.models import Comment
from service.sites import create_site
from service.sweeper import sweep

upgrade()
create_app()  # binds Celery to this process's broker
broker = redis.Redis.from_url(sys.argv[1])
with session_scope() as db:
    site, _ = create_site(db, "Sweeper blog", "https://blog.example", None)
    old = datetime.now(UTC) - timedelta(minutes=5)
    db.add_all([Comment(site_id=site.id, content=f"pending {i}", status="pending", received_at=old) for i in range(5)])
steps = []
for _ in range(4):  # a minute of sweeps with no worker consuming
    steps.append((sweep(limit=5)["comments"], broker.llen("score")))
broker.delete("score")  # now the messages are lost (a flushed broker): the next sweep must send them again
steps.append((sweep(limit=5)["comments"], broker.llen("score")))
print(json.dumps(steps))
"""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(50):
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def child_env(bouncer_env: dict[str, str], redis_url: str, tmp_path: Path) -> dict[str, Any]:
    """The child's settings: a database and a Redis of its own, which no worker of the session reads."""
    return {
        **os.environ,
        **bouncer_env,
        "BOUNCER_DATA_DIR": str(tmp_path),
        "BOUNCER_DATABASE_URL": f"sqlite:///{tmp_path / 'sweeper.db'}",
        "BOUNCER_MODELS_DIR": str(tmp_path / "models"),
        "BOUNCER_REDIS_URL": redis_url,
    }


def test_the_sweeper_does_not_pile_up_messages_no_worker_takes(
    bouncer_env: dict[str, str], own_redis: str, tmp_path: Path
) -> None:
    """While no worker consumes (all workers down for an hour, say), each sweep used to push every pending comment
    again: 2000 messages every 15 s, until Redis ran out of memory. A sweep now tops the score queue up to its
    limit and no further; once the queue is empty again, the comments are sent again."""
    env = child_env(bouncer_env, own_redis, tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, own_redis], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    assert steps[0] == [5, 5]  # the lost comments are sent
    assert all(waiting <= 5 for _, waiting in steps[1:4]), steps  # ... and not again while they wait
    assert steps[4] == [5, 5], steps  # lost again: sent again


# Runs in the child: queued retrain runs whose task is gone (a Redis restart that kept nothing), sweeps with no worker.
RETRAIN_SCRIPT = """
import base64, json, sys
from datetime import UTC, datetime, timedelta
import redis
from sqlalchemy import update
from service import retraining
from service.app import create_app
from service.db import session_scope
from service.migrate import upgrade
from service.models import RetrainRun
from service.sweeper import sweep

upgrade()
create_app()  # binds Celery to this process's broker
broker = redis.Redis.from_url(sys.argv[1])
notify = redis.Redis.from_url(sys.argv[1].rsplit("/", 1)[0] + "/1")
lost = retraining.create_run("spam", "admin@example.org")
fresh = retraining.create_run("abuse", "admin@example.org")
with session_scope() as db:
    old = datetime.now(UTC) - timedelta(seconds=retraining.RESEND_QUEUED_SECONDS + 60)
    db.execute(update(RetrainRun).where(RetrainRun.id == lost).values(created_at=old))

def queued_run_ids():
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][2] for m in broker.lrange("retrain", 0, -1)]

steps = {"ids": [lost, fresh]}
steps["first"] = (sweep()["retrains"], queued_run_ids())  # the lost run is sent, the fresh one waits for its task
steps["waiting"] = (sweep()["retrains"], queued_run_ids())  # its message waits in the queue: not lost
broker.delete("retrain")  # lost again
steps["too_soon"] = (sweep()["retrains"], queued_run_ids())  # sent once per RESEND_QUEUED_SECONDS
notify.delete(f"bouncer:retrain-resent:{lost}")
steps["again"] = (sweep()["retrains"], queued_run_ids())
broker.delete("retrain")
notify.delete(f"bouncer:retrain-resent:{lost}")
assert retraining.start_run(fresh)  # a run runs: the queued ones wait for it, their tasks retrying
steps["busy"] = (sweep()["retrains"], queued_run_ids())
print(json.dumps(steps))
"""


def test_the_sweeper_sends_again_a_retrain_run_whose_task_was_lost(
    bouncer_env: dict[str, str], own_redis: str, tmp_path: Path
) -> None:
    """An admin's retrain queued just before Redis restarted with nothing kept: its task was gone and the run stayed
    queued -- that kind refused as busy -- for six hours. The sweeper now sends the task again once the run has
    waited five minutes with no run running, and not while its message waits in the queue."""
    env = child_env(bouncer_env, own_redis, tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", RETRAIN_SCRIPT, own_redis],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    lost, _fresh = steps["ids"]
    assert steps["first"] == [1, [lost]], steps
    assert steps["waiting"] == [0, [lost]], steps
    assert steps["too_soon"] == [0, []], steps
    assert steps["again"] == [1, [lost]], steps
    assert steps["busy"] == [0, []], steps
