"""A bounded number of scoring attempts per comment: one that keeps killing its worker is held for a moderator.

A scoring batch whose pool process dies (a segfault in a native library, the OOM killer) goes back to the queue at
once (``workers.tasks.HandBackBatches``). That is right for an innocent crash, but a comment that itself kills the
process would come back for ever and take its batch-mates down each time. So an attempt is counted in Redis before
it starts and taken back when it returns, whether it decided or raised: a count that stays is an attempt that died
with its process. Counting in the attempt, not in the pool's error callback, also covers a whole worker killed
(threads or solo pool) and every way a message comes back: requeue, the sweeper, the visibility timeout.

From those counts a batch is planned:

- a comment no attempt died on is scored with the rest of the batch (nearly always all of them);
- a comment an attempt died on is a suspect and is scored alone, fewest deaths first, so the one that kills the
  process cannot take innocent batch-mates down again (each of them is decided in its own attempt);
- a comment ``BOUNCER_SCORE_MAX_ATTEMPTS`` attempts died on is not scored again: it is held for a moderator.

An attempt that raises leaves the process alive, and its count is taken back like any other; whose fault it was
is decided after (``workers.tasks.score_comment``; the Akismet web fallback, which scores one comment, by the same
rule). A batch whose scoring raises is scored again one comment at a time, so the one comment the scorer cannot
handle (pathological input) no longer keeps its batch-mates pending. A comment that then fails alone is blamed --
``count_failed_attempt`` counts it as an attempt that died, with the same bound -- only when the scorer is shown to
work (``blamed_failures``); when every comment fails (a broken model), or the database does, nothing is counted and
the sweeper retries them as before. Redis trouble here fails open: scoring matters more than the bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from service import redis_bus
from service.config import settings

log = logging.getLogger(__name__)


def gave_up_reason(limit: int) -> str:
    """The reason shown to moderators and the blog for a comment held because scoring it kept failing."""
    return f"automatic scoring failed {limit} {'time' if limit == 1 else 'times'}; held for a moderator"


@dataclass(frozen=True)
class AttemptPlan:
    """How a batch of comments is scored, from how many attempts on each died."""

    together: list[int] = field(default_factory=list)  # no attempt died: one batch, one model call
    alone: list[int] = field(default_factory=list)  # suspects: one attempt each, fewest deaths first
    held: list[int] = field(default_factory=list)  # out of attempts: held without scoring
    held_reason: str = ""


def plan_attempts(comment_ids: Sequence[int]) -> AttemptPlan:
    """Split ``comment_ids`` by how many of their scoring attempts died (``BOUNCER_SCORE_MAX_ATTEMPTS`` at most)."""
    limit = settings().score_max_attempts
    try:
        died = redis_bus.unfinished_scoring_attempts(comment_ids)
    except redis.RedisError:
        log.warning("could not read the scoring attempts of %s; scoring them together", list(comment_ids))
        return AttemptPlan(together=list(comment_ids))
    return AttemptPlan(
        together=[cid for cid in comment_ids if died[cid] == 0],
        alone=sorted((cid for cid in comment_ids if 0 < died[cid] < limit), key=lambda cid: (died[cid], cid)),
        held=[cid for cid in comment_ids if died[cid] >= limit],
        held_reason=gave_up_reason(limit),
    )


@contextmanager
def scoring_attempt(comment_ids: Sequence[int]) -> Iterator[None]:
    """Count one scoring attempt of these comments for the duration of the block (it stays if the process dies)."""
    try:
        redis_bus.start_scoring_attempt(comment_ids)
    except redis.RedisError:
        log.warning("could not count a scoring attempt of %s", list(comment_ids), exc_info=True)
    try:
        yield
    finally:
        try:
            redis_bus.finish_scoring_attempt(comment_ids)
        except redis.RedisError:  # the attempt stays counted as if it died: one too many, not one too few
            log.warning("could not take back the scoring attempt of %s", list(comment_ids), exc_info=True)


def count_failed_attempt(comment_ids: Sequence[int]) -> None:
    """Count a scoring attempt of each comment that raised on it, as if it had died: scored alone next time, and held
    once ``BOUNCER_SCORE_MAX_ATTEMPTS`` are counted."""
    if not comment_ids:
        return
    log.warning("scoring failed on comments %s alone; counted as a failed attempt", list(comment_ids))
    try:
        redis_bus.start_scoring_attempt(comment_ids)  # an attempt counted and never taken back
    except redis.RedisError:
        log.warning("could not count the failed scoring attempt of %s", list(comment_ids), exc_info=True)


def scoring_worked() -> None:
    """Note that a scoring attempt decided comments: for a while, a comment failing alone is its own fault."""
    try:
        redis_bus.note_scoring_succeeded()
    except redis.RedisError:
        log.warning("could not note that scoring worked", exc_info=True)


def blamed_failures(failed: Sequence[int], tried_alone: int, decided_any: bool) -> list[int]:
    """Which comments that failed to score alone are at fault: all of them if the scorer works, else none.

    It works if another comment of the same run was decided, or -- for a comment that came alone, with nothing to
    compare -- if any worker scored comments a moment ago (``redis_bus.scoring_succeeded_recently``). When two or
    more comments were scored alone and every one failed, the scorer is broken (a bad model, a bug) and no comment
    is blamed, whatever succeeded before: they stay pending and the sweeper retries them.
    """
    if not failed or decided_any:
        return list(failed)
    if tried_alone > 1:
        return []
    try:
        works = redis_bus.scoring_succeeded_recently()
    except redis.RedisError:
        works = False
    return list(failed) if works else []
