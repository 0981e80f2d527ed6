"""Scoring attempts counted in a real Redis: only an attempt that dies with its process, or fails on its comment
alone, stays counted, and the counts decide how a batch is scored (together, alone, or held without scoring); failed
attempts no one is blamed for are noted apart, and a comment whose scoring kept failing for long enough is held."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
from sqlalchemy import select, update

from service import redis_bus
from service.config import load_settings
from service.db import session_scope
from service.decisions.attempts import (
    AttemptPlan,
    count_failures,
    gave_up_reason,
    kept_failing_reason,
    plan_attempts,
    scoring_attempt,
    scoring_worked,
)
from service.models import Comment
from service.sites import create_site
from tests.conftest import REPO, LiveServer, WorkerProcess, decide_events, forget_scoring_successes

# Far above the ids of stored comments, so the counts of this file never meet those of another test's comment.
_ids = itertools.count(10**15)
SCORER, NEW_SCORER = "abuse=abuse-1,spam=spam-1", "abuse=abuse-1,spam=spam-2"

DIE_INSIDE_AN_ATTEMPT = """
import os, sys
from service.decisions.attempts import scoring_attempt
with scoring_attempt([int(a) for a in sys.argv[1:]]):
    os._exit(9)  # the process dies mid-attempt, as under the OOM killer: nothing after this line runs
"""


def _die_inside_an_attempt(env: dict[str, str], ids: list[int]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DIE_INSIDE_AN_ATTEMPT, *map(str, ids)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 9, done.stderr[-2000:]


def test_an_attempt_that_returns_or_raises_leaves_nothing_counted(bouncer_env: dict[str, str]) -> None:
    ids = [next(_ids), next(_ids)]
    with scoring_attempt(ids):
        assert redis_bus.unfinished_scoring_attempts(ids) == {ids[0]: 1, ids[1]: 1}
    with pytest.raises(RuntimeError), scoring_attempt(ids):
        raise RuntimeError("a broken model fails every comment alike: not the comment's fault")
    assert plan_attempts(ids) == AttemptPlan(together=ids)
    broker = redis_bus.client(redis_bus.BROKER_DB)
    assert not broker.exists(*[f"bouncer:score-attempts:{cid}" for cid in ids])  # no key kept for a day


def test_a_comment_attempts_die_on_is_scored_alone_then_held(bouncer_env: dict[str, str]) -> None:
    first, poison, last, fresh = next(_ids), next(_ids), next(_ids), next(_ids)
    _die_inside_an_attempt(bouncer_env, [first, poison, last])  # a batch went down: each of them is a suspect
    assert plan_attempts([first, poison, last, fresh]) == AttemptPlan(together=[fresh], alone=[first, poison, last])
    _die_inside_an_attempt(bouncer_env, [poison])  # alone, it killed another process: the others go first
    assert plan_attempts([first, poison, last]).alone == [first, last, poison]
    with scoring_attempt([poison]):  # an attempt that returns takes back only itself
        pass
    assert redis_bus.unfinished_scoring_attempts([poison]) == {poison: 2}
    _die_inside_an_attempt(bouncer_env, [poison])
    plan = plan_attempts([first, poison, last])
    assert plan.alone == [first, last]
    assert plan.held == {poison: "automatic scoring failed 3 times; held for a moderator"}
    broker = redis_bus.client(redis_bus.BROKER_DB)
    ttl = cast(int, broker.ttl(f"bouncer:score-attempts:{poison}"))  # a sync client
    assert 0 < ttl <= redis_bus.SCORE_ATTEMPTS_TTL_SECONDS


def test_the_limit_is_a_setting(bouncer_env: dict[str, str]) -> None:
    from service.config import settings

    once = next(_ids)
    _die_inside_an_attempt(bouncer_env, [once])
    os.environ["BOUNCER_SCORE_MAX_ATTEMPTS"] = "1"
    settings.cache_clear()
    try:
        assert plan_attempts([once]) == AttemptPlan(held={once: gave_up_reason(1)})
        assert gave_up_reason(1) == "automatic scoring failed 1 time; held for a moderator"
    finally:
        del os.environ["BOUNCER_SCORE_MAX_ATTEMPTS"]
        settings.cache_clear()


def _scoring_worker(
    bouncer_env: dict[str, str], redis_port: int, database: str, tmp_path: Path
) -> tuple[dict[str, str], LiveServer, WorkerProcess]:
    """A web server and a prefork worker whose scorer fails on marked comments (tests/service/crashing_worker.py),
    on a Redis and a database of the test's own, with the worker's sweeper (every 2 s, pending over 3 s)."""
    from tests.service.crashing_worker import FAULTS_DIR_VARIABLE

    env = {
        **bouncer_env,
        "BOUNCER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "BOUNCER_DATABASE_URL": database,
        FAULTS_DIR_VARIABLE: str(tmp_path),
    }
    server = LiveServer(env, tmp_path / "web.log")
    work = WorkerProcess(
        env, tmp_path / "worker.log", pool="prefork", concurrency=1, app="tests.service.crashing_worker:celery"
    )
    return env, server, work


def _post_pending(server: LiveServer, key: str, content: str) -> int:
    response = httpx.post(
        f"{server.url}/api/v1/comments?wait=0",
        json={"content": content},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def _comments(database: str, ids: list[int]) -> dict[int, tuple[str, str | None, list[str], float | None]]:
    """Status, decision, reasons and spam score of each comment, and how many decide events each has."""
    with session_scope(database) as session:
        rows = session.execute(
            select(Comment.id, Comment.status, Comment.decision, Comment.reasons, Comment.spam_score).where(
                Comment.id.in_(ids)
            )
        ).all()
    return {cid: (status, decision, list(reasons or []), spam) for cid, status, decision, reasons, spam in rows}


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_comment_that_breaks_its_scorer_is_held_and_spares_its_batch_mates(
    bouncer_env: dict[str, str], private_redis: dict[str, Any], own_database: str, tmp_path: Path
) -> None:
    """A comment the scorer raises on (pathological input; the process lives) failed its whole batch, every time
    the sweeper sent it again: its batch-mates were never decided. Now a batch whose scoring raises is scored again
    one comment at a time: the others are decided as usual, the one that fails alone while they succeed has a
    failed attempt counted, and after BOUNCER_SCORE_MAX_ATTEMPTS (3) it is held for a moderator with the reason."""
    from tests.service.crashing_worker import BREAKS_EVERY_TIME

    database = load_settings({**bouncer_env, "BOUNCER_DATABASE_URL": own_database}).database_url
    with session_scope(database) as session:
        _, keys = create_site(session, "Breaking blog", "https://blog.example")
    _env, server, work = _scoring_worker(bouncer_env, private_redis["port"], own_database, tmp_path)
    server.start()
    try:
        contents = [f"comment {i} about pruning roses in February, thanks" for i in range(8)]
        contents.insert(3, f"{BREAKS_EVERY_TIME} a comment the scorer cannot handle")
        # Sent while no worker runs, so that they wait in the queue and are taken as one batch.
        ids = [_post_pending(server, keys.api_key, text) for text in contents]
        poison, innocent = ids[3], ids[:3] + ids[4:]
        work.start()

        def all_decided() -> bool:
            return all(status == "decided" for status, *_ in _comments(database, ids).values())

        _wait_for(all_decided, 120, "every comment to be decided")
        comments = _comments(database, ids)
        assert comments[poison] == ("decided", "hold", [gave_up_reason(3)], None)
        for cid in innocent:
            status, decision, reasons, spam = comments[cid]
            assert spam is not None and gave_up_reason(3) not in reasons, comments[cid]
        assert decide_events(ids, database) == {cid: 1 for cid in ids}

        log = (tmp_path / "worker.log").read_text()
        batches = [int(n) for n in re.findall(r"scoring a batch of (\d+) comments raised", log)]
        assert batches and max(batches) > 1, log[-3000:]  # it did fail a batch of innocent comments
        counted = re.findall(r"scoring failed on comments \[(\d+)\] alone; counted", log)
        assert counted == [str(poison)] * 3, log[-3000:]  # only the poison was blamed, once an attempt
        assert "worker lost" not in log  # the process lived through it
        broker = redis.Redis(port=private_redis["port"], db=redis_bus.BROKER_DB)
        assert broker.get(f"bouncer:score-attempts:{poison}") == b"3"
        assert not broker.exists(*[f"bouncer:score-attempts:{cid}" for cid in innocent])
    finally:
        work.kill(signal.SIGTERM)
        server.stop()


def test_when_every_comment_fails_alone_none_is_blamed(
    bouncer_env: dict[str, str], private_redis: dict[str, Any], own_database: str, tmp_path: Path
) -> None:
    """A batch in which every comment fails, also alone, looks like a broken scorer (a bad model, a bug), not bad
    comments: no attempt is counted, and they stay pending for the sweeper to send again, however often it fails."""
    from tests.service.crashing_worker import BREAKS_EVERY_TIME

    database = load_settings({**bouncer_env, "BOUNCER_DATABASE_URL": own_database}).database_url
    with session_scope(database) as session:
        _, keys = create_site(session, "Broken blog", "https://blog.example")
    _env, server, work = _scoring_worker(bouncer_env, private_redis["port"], own_database, tmp_path)
    server.start()
    try:
        broken = [_post_pending(server, keys.api_key, f"{BREAKS_EVERY_TIME} comment {i}") for i in range(4)]
        work.start()
        _wait_for(
            lambda: (
                len(re.findall(r"scoring a batch of \d+ comments raised", (tmp_path / "worker.log").read_text())) >= 3
            ),
            60,
            "the batch to fail and be sent again by the sweeper",
        )
        assert {status for status, *_ in _comments(database, broken).values()} == {"pending"}
        broker = redis.Redis(port=private_redis["port"], db=redis_bus.BROKER_DB)
        # An attempt in flight (the sweeper sends them again every 2 s) is counted until it returns; one counted as
        # failed would stay for a day.
        _wait_for(
            lambda: not broker.exists(*[f"bouncer:score-attempts:{cid}" for cid in broken]),
            10,
            "no attempt to stay counted",
        )
        assert "counted" not in (tmp_path / "worker.log").read_text()
    finally:
        work.kill(signal.SIGTERM)
        server.stop()


def test_a_lone_failure_is_blamed_only_while_scoring_works(bouncer_env: dict[str, str]) -> None:
    from service.decisions.attempts import blamed_failures

    lone, other = next(_ids), next(_ids)
    forget_scoring_successes()
    assert blamed_failures([lone], tried_alone=1, decided_any=False, scorer=SCORER) == []  # nothing to compare
    assert blamed_failures([lone, other], tried_alone=3, decided_any=True, scorer=SCORER) == [lone, other]
    scoring_worked(SCORER)
    assert blamed_failures([lone], tried_alone=1, decided_any=False, scorer=SCORER) == [lone]  # scored a moment ago
    assert blamed_failures([lone, other], tried_alone=2, decided_any=False, scorer=SCORER) == []  # every one failed
    # Processes still on the old model decide their comments; one that loaded a newly promoted model fails each of its
    # own: that is the new model's fault, not the comment's, and a model that does not load blames no comment either.
    assert blamed_failures([lone], tried_alone=1, decided_any=False, scorer=NEW_SCORER) == []
    assert blamed_failures([lone], tried_alone=1, decided_any=False, scorer=None) == []
    scoring_worked(None)  # nothing to note
    assert blamed_failures([lone], tried_alone=1, decided_any=False, scorer=NEW_SCORER) == []


def test_the_scorer_is_its_models_and_libraries(bouncer_env: dict[str, str]) -> None:
    import numpy
    import sklearn

    from service.scoring import active_models, scorer_identity

    versions = {kind: model.version for kind, model in active_models().items()}
    assert scorer_identity() == (
        f"abuse={versions['abuse']},spam={versions['spam']},sklearn={sklearn.__version__},numpy={numpy.__version__}"
    )


def _failures_key(cid: int) -> str:
    return f"bouncer:score-failures:{cid}"


def test_unblamed_failures_give_up_only_once_they_went_on_long_enough(bouncer_env: dict[str, str]) -> None:
    """Failures no one is blamed for (every comment of a run failed) were not counted at all: comments that each
    break the scorer, arriving together, or a broken model, stayed pending for ever. Now each is noted with its time,
    and a comment is held once BOUNCER_SCORE_MAX_ATTEMPTS (3) of them span BOUNCER_SCORE_GIVE_UP_SECONDS (3600): from
    the first failure to the latest, so a comment that failed and then waited out an outage is tried again."""
    a, b = next(_ids), next(_ids)
    forget_scoring_successes()
    before = time.time()
    count_failures([a, b], tried_alone=2, decided_any=False, scorer=SCORER)  # every one failed: none blamed, each noted
    assert redis_bus.unfinished_scoring_attempts([a, b]) == {a: 0, b: 0}
    noted = redis_bus.unblamed_scoring_failures([a, b])
    assert noted[a].count == noted[b].count == 1 and before <= noted[a].first == noted[a].last <= time.time()
    ttl = cast(int, redis_bus.client(redis_bus.BROKER_DB).ttl(_failures_key(a)))
    assert 0 < ttl <= redis_bus.SCORE_ATTEMPTS_TTL_SECONDS
    scoring_worked(SCORER)
    count_failures(
        [a], tried_alone=1, decided_any=False, scorer=SCORER
    )  # scoring works: its own fault, counted as before
    assert redis_bus.unfinished_scoring_attempts([a]) == {a: 1}
    assert redis_bus.unblamed_scoring_failures([a])[a].count == 1  # not noted as unblamed too

    now = time.time()
    broken, interrupted, twice, almost, fresh = (next(_ids) for _ in range(5))
    for at in (now - 3600, now - 1800, now):  # it kept failing for an hour
        redis_bus.note_unblamed_failures([broken], now=at)
    for at in (now - 7200, now - 7190, now - 7180):  # three failures two hours ago, then nothing ran (an outage)
        redis_bus.note_unblamed_failures([interrupted], now=at)
    for at in (now - 7200, now):  # failing for two hours, but only twice
        redis_bus.note_unblamed_failures([twice], now=at)
    for at in (now - 3599, now - 60, now):  # not quite an hour
        redis_bus.note_unblamed_failures([almost], now=at)
    assert redis_bus.unblamed_scoring_failures([broken])[broken].span == 3600
    reason = kept_failing_reason(3600)
    assert reason == "automatic scoring kept failing for 60 minutes; held for a moderator"
    assert plan_attempts([broken, interrupted, twice, almost, fresh]) == AttemptPlan(
        together=[interrupted, twice, almost, fresh], held={broken: reason}
    )
    assert kept_failing_reason(5) == "automatic scoring kept failing for 5 seconds; held for a moderator"
    _die_inside_an_attempt(bouncer_env, [twice])  # a death as well: scored alone, held by neither bound yet
    assert plan_attempts([twice]) == AttemptPlan(alone=[twice])


@contextmanager
def _blog() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A blog receiving callbacks on loopback: its URL and the JSON bodies it received."""
    received: list[dict[str, Any]] = []

    class Blog(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Blog)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_comments_that_all_break_the_scorer_are_held_once_it_kept_failing(
    bouncer_env: dict[str, str], private_redis: dict[str, Any], own_database: str, tmp_path: Path
) -> None:
    """Several comments that each break the scorer, arriving together with nothing else to score: every run fails
    every comment, so none is blamed (it looks like a broken model), and they stayed pending for ever, sent again at
    every sweep; the blog never heard of them, moderators never saw them. Now, once their scoring kept failing for
    BOUNCER_SCORE_GIVE_UP_SECONDS (6 here), they are held for a moderator, unscored, with the reason, one decision
    and one callback each, as any hold."""
    from tests.service.crashing_worker import BREAKS_EVERY_TIME

    env = {**bouncer_env, "BOUNCER_SCORE_GIVE_UP_SECONDS": "6"}
    database = load_settings({**env, "BOUNCER_DATABASE_URL": own_database}).database_url
    with _blog() as (url, received):
        with session_scope(database) as session:
            _, keys = create_site(session, "Stuck blog", "https://blog.example", callback_url=url)
        _env, server, work = _scoring_worker(env, private_redis["port"], own_database, tmp_path)
        server.start()
        try:
            started = time.time()
            broken = [_post_pending(server, keys.api_key, f"{BREAKS_EVERY_TIME} comment {i}") for i in range(3)]
            work.start()

            def all_decided() -> bool:
                return all(status == "decided" for status, *_ in _comments(database, broken).values())

            _wait_for(all_decided, 120, "the comments to be held")
            reason = kept_failing_reason(6)
            assert reason == "automatic scoring kept failing for 6 seconds; held for a moderator"
            assert _comments(database, broken) == {cid: ("decided", "hold", [reason], None) for cid in broken}
            assert decide_events(broken, database) == {cid: 1 for cid in broken}
            _wait_for(lambda: len(received) >= len(broken), 30, "the blog's callbacks")
            assert sorted(body["comment"]["id"] for body in received) == sorted(broken)
            for body in received:
                assert (body["event"], body["comment"]["decision"]) == ("comment.decided", "hold")
                assert body["comment"]["reasons"] == [reason]

            broker = redis.Redis(port=private_redis["port"], db=redis_bus.BROKER_DB)
            for cid in broken:  # held on the failures noted: at least three, over at least the 6 s
                count, first, last = cast(
                    list[bytes | None], broker.hmget(_failures_key(cid), ["count", "first", "last"])
                )
                assert int(count or 0) >= 3 and float(last or 0) - float(first or 0) >= 6
                assert float(first or 0) >= started
            assert not broker.exists(*[f"bouncer:score-attempts:{cid}" for cid in broken])  # nothing blamed
            log = (tmp_path / "worker.log").read_text()
            assert "counted" not in log and "worker lost" not in log, log[-3000:]
            assert f"held without scoring: {reason}" in log
        finally:
            work.kill(signal.SIGTERM)
            server.stop()


def test_comments_that_waited_out_an_outage_are_scored_not_held(
    bouncer_env: dict[str, str], private_redis: dict[str, Any], own_database: str, tmp_path: Path
) -> None:
    """The give-up counts failures that happened, not time spent waiting: comments received two hours ago and never
    scored (no worker ran, Redis or the database was down), and one whose scoring failed three times just before
    such an outage, are scored as usual when scoring works again, with BOUNCER_SCORE_GIVE_UP_SECONDS far shorter
    than they waited (5 s); in the same run, one whose failures did go on for two hours, until a moment ago, is
    held."""
    env = {**bouncer_env, "BOUNCER_SCORE_GIVE_UP_SECONDS": "5"}
    database = load_settings({**env, "BOUNCER_DATABASE_URL": own_database}).database_url
    with session_scope(database) as session:
        _, keys = create_site(session, "Patient blog", "https://blog.example")
    _env, server, work = _scoring_worker(env, private_redis["port"], own_database, tmp_path)
    server.start()
    try:
        ids = [_post_pending(server, keys.api_key, f"comment {i} about pruning roses, thanks") for i in range(5)]
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        with session_scope(database) as session:
            session.execute(update(Comment).where(Comment.id.in_(ids)).values(received_at=long_ago))
        interrupted, kept_failing, waited = ids[0], ids[1], ids[2:]
        broker = redis.Redis(port=private_redis["port"], db=redis_bus.BROKER_DB)
        then = long_ago.timestamp()
        # As count_failures noted them two hours ago: three failures over 4 s (sweeps 2 s apart), then nothing ran.
        broker.hset(_failures_key(interrupted), mapping={"count": 3, "first": then, "last": then + 4})
        # Three failures from two hours ago until a moment ago: its scoring did keep failing.
        broker.hset(_failures_key(kept_failing), mapping={"count": 3, "first": then, "last": time.time() - 1})
        work.start()

        def all_decided() -> bool:
            return all(status == "decided" for status, *_ in _comments(database, ids).values())

        _wait_for(all_decided, 60, "every comment to be decided")
        comments = _comments(database, ids)
        assert comments[kept_failing] == ("decided", "hold", [kept_failing_reason(5)], None)
        for cid in [interrupted, *waited]:
            _status, _decision, reasons, spam = comments[cid]
            assert spam is not None and kept_failing_reason(5) not in reasons, comments[cid]
        assert decide_events(ids, database) == {cid: 1 for cid in ids}
        log = (tmp_path / "worker.log").read_text()
        assert re.findall(r"comments \[(\d+)\] held without scoring", log) == [str(kept_failing)], log[-3000:]
    finally:
        work.kill(signal.SIGTERM)
        server.stop()


def test_a_broken_scorer_that_recovers_in_time_scores_its_comments(
    bouncer_env: dict[str, str], private_redis: dict[str, Any], own_database: str, tmp_path: Path
) -> None:
    """A broken model fails every comment, no one is blamed, and each failure is noted; fixed before their failures
    span BOUNCER_SCORE_GIVE_UP_SECONDS (30 s here), the comments are scored as usual, though each failed at least
    BOUNCER_SCORE_MAX_ATTEMPTS (3) times: the count alone holds nothing."""
    from tests.service.crashing_worker import BREAKS_WHILE_BROKEN, SCORER_BROKEN_FILE

    env = {**bouncer_env, "BOUNCER_SCORE_GIVE_UP_SECONDS": "30"}
    database = load_settings({**env, "BOUNCER_DATABASE_URL": own_database}).database_url
    with session_scope(database) as session:
        _, keys = create_site(session, "Recovering blog", "https://blog.example")
    broken_model = tmp_path / SCORER_BROKEN_FILE
    broken_model.touch()
    _env, server, work = _scoring_worker(env, private_redis["port"], own_database, tmp_path)
    server.start()
    try:
        ids = [_post_pending(server, keys.api_key, f"{BREAKS_WHILE_BROKEN} comment {i} on roses") for i in range(3)]
        work.start()
        broker = redis.Redis(port=private_redis["port"], db=redis_bus.BROKER_DB)

        def failed_three_times() -> bool:
            return all(int(cast(bytes | None, broker.hget(_failures_key(cid), "count")) or 0) >= 3 for cid in ids)

        _wait_for(failed_three_times, 25, "three unblamed failures of each comment")
        assert {status for status, *_ in _comments(database, ids).values()} == {"pending"}
        broken_model.unlink()  # the model is fixed

        def all_decided() -> bool:
            return all(status == "decided" for status, *_ in _comments(database, ids).values())

        _wait_for(all_decided, 60, "every comment to be decided")
        for cid, (_status, decision, reasons, spam) in _comments(database, ids).items():
            assert spam is not None and kept_failing_reason(30) not in reasons, (cid, decision, reasons)
        assert decide_events(ids, database) == {cid: 1 for cid in ids}
        log = (tmp_path / "worker.log").read_text()
        assert "held without scoring" not in log and "counted" not in log, log[-3000:]
    finally:
        work.kill(signal.SIGTERM)
        server.stop()
