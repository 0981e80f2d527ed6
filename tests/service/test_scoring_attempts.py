"""Scoring attempts counted in a real Redis: only an attempt that dies with its process stays counted, and the
counts decide how a batch is scored (together, alone, or held without scoring)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from typing import cast

import pytest

from service import redis_bus
from service.decisions.attempts import AttemptPlan, gave_up_reason, plan_attempts, scoring_attempt
from tests.conftest import REPO

# Far above the ids of stored comments, so the counts of this file never meet those of another test's comment.
_ids = itertools.count(10**15)

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
    assert plan_attempts(ids) == AttemptPlan(together=ids, held_reason=gave_up_reason(3))
    broker = redis_bus.client(redis_bus.BROKER_DB)
    assert not broker.exists(*[f"bouncer:score-attempts:{cid}" for cid in ids])  # no key kept for a day


def test_a_comment_attempts_die_on_is_scored_alone_then_held(bouncer_env: dict[str, str]) -> None:
    first, poison, last, fresh = next(_ids), next(_ids), next(_ids), next(_ids)
    _die_inside_an_attempt(bouncer_env, [first, poison, last])  # a batch went down: each of them is a suspect
    assert plan_attempts([first, poison, last, fresh]) == AttemptPlan(
        together=[fresh], alone=[first, poison, last], held_reason=gave_up_reason(3)
    )
    _die_inside_an_attempt(bouncer_env, [poison])  # alone, it killed another process: the others go first
    assert plan_attempts([first, poison, last]).alone == [first, last, poison]
    with scoring_attempt([poison]):  # an attempt that returns takes back only itself
        pass
    assert redis_bus.unfinished_scoring_attempts([poison]) == {poison: 2}
    _die_inside_an_attempt(bouncer_env, [poison])
    plan = plan_attempts([first, poison, last])
    assert (plan.alone, plan.held) == ([first, last], [poison])
    assert plan.held_reason == "automatic scoring failed 3 times; held for a moderator"
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
        assert plan_attempts([once]) == AttemptPlan(held=[once], held_reason=gave_up_reason(1))
        assert gave_up_reason(1) == "automatic scoring failed 1 time; held for a moderator"
    finally:
        del os.environ["BOUNCER_SCORE_MAX_ATTEMPTS"]
        settings.cache_clear()
