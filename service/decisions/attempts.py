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

Errors that leave the process alive (a locked database, a broken model) do not count: they fail every comment
alike, and the sweeper retries them as before. Redis trouble here fails open: scoring matters more than the bound.
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
