"""A bounded number of scoring attempts per comment: one that keeps killing or failing its scorer is held.

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
rule: ``count_failures``). A batch whose scoring raises is scored again one comment at a time, so the one comment the
scorer cannot handle (pathological input) no longer keeps its batch-mates pending. A comment that then fails alone is
blamed -- ``count_failed_attempt`` counts it as an attempt that died, with the same bound -- only when the scorer is
shown to work (``blamed_failures``). When every comment fails (a broken model, a bug, or several comments that each
break the scorer arriving with nothing else), no one is blamed: the sweeper sends them again, and each such failure
is noted apart (``redis_bus.note_unblamed_failures``: how many, the first and the latest). That cannot go on for
ever: a comment with ``BOUNCER_SCORE_MAX_ATTEMPTS`` unblamed failures whose failures span
``BOUNCER_SCORE_GIVE_UP_SECONDS`` (from the first to the latest) is held for a moderator like one out of attempts,
without scoring, with the reason ``kept_failing_reason``; the blog gets its callback as for any hold.

Only attempts that ran and raised count, and the time is measured between failures, not from when the comment
arrived or first failed to now: a comment that waited in a queue (no worker running, Redis or the database down --
``_decide`` leaves the database's errors to the sweeper without raising) has no failure noted, and one that failed a
few times before an outage is tried again after it and held only if it fails again, so an outage alone never holds a
comment, however long it lasted. Redis trouble here fails open: scoring matters more than the bound. A record Redis
loses (a restart without persistence, or a day without a failure) only starts the clock again: the comment is held
later, never earlier.
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
    """The reason shown to moderators and the blog for a comment held because its scoring attempts ran out."""
    return f"automatic scoring failed {limit} {'time' if limit == 1 else 'times'}; held for a moderator"


def kept_failing_reason(seconds: int) -> str:
    """The reason shown to moderators and the blog for a comment held because scoring it kept failing for
    ``seconds`` (``BOUNCER_SCORE_GIVE_UP_SECONDS``), no one to blame (a broken model, or only such comments)."""
    if seconds < 120:
        duration = f"{seconds} {'second' if seconds == 1 else 'seconds'}"
    else:
        duration = f"{seconds // 60} minutes"
    return f"automatic scoring kept failing for {duration}; held for a moderator"


@dataclass(frozen=True)
class AttemptPlan:
    """How a batch of comments is scored, from how many attempts on each died or failed."""

    together: list[int] = field(default_factory=list)  # no attempt died: one batch, one model call
    alone: list[int] = field(default_factory=list)  # suspects: one attempt each, fewest deaths first
    held: dict[int, str] = field(default_factory=dict)  # given up: held without scoring, with this reason

    def held_by_reason(self) -> dict[str, list[int]]:
        """The held comments grouped by their reason (one ``decide_pending`` call each)."""
        groups: dict[str, list[int]] = {}
        for cid, reason in self.held.items():
            groups.setdefault(reason, []).append(cid)
        return groups


def plan_attempts(comment_ids: Sequence[int]) -> AttemptPlan:
    """Split ``comment_ids`` by how many of their scoring attempts died (``BOUNCER_SCORE_MAX_ATTEMPTS`` at most), and
    give up on those whose unblamed failures went on for ``BOUNCER_SCORE_GIVE_UP_SECONDS``."""
    cfg = settings()
    limit, give_up = cfg.score_max_attempts, cfg.score_give_up_seconds
    try:
        died, failures = redis_bus.scoring_records(comment_ids)
    except redis.RedisError:
        log.warning("could not read the scoring attempts of %s; scoring them together", list(comment_ids))
        return AttemptPlan(together=list(comment_ids))
    held: dict[int, str] = {}
    for cid in comment_ids:
        if died[cid] >= limit:
            held[cid] = gave_up_reason(limit)
        elif failures[cid].count >= limit and failures[cid].span >= give_up:
            held[cid] = kept_failing_reason(give_up)
    return AttemptPlan(
        together=[cid for cid in comment_ids if cid not in held and died[cid] == 0],
        alone=sorted(
            (cid for cid in comment_ids if cid not in held and died[cid] > 0), key=lambda cid: (died[cid], cid)
        ),
        held=held,
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


def scoring_worked(scorer: str | None) -> None:
    """Note that a scoring attempt decided comments with ``scorer`` (``service.scoring.scorer_identity``): for a
    while, a comment failing alone on that scorer is its own fault."""
    if scorer is None:
        return
    try:
        redis_bus.note_scoring_succeeded(scorer)
    except redis.RedisError:
        log.warning("could not note that scoring worked", exc_info=True)


def count_failures(failed: Sequence[int], tried_alone: int, decided_any: bool, scorer: str | None) -> None:
    """After a run: count the comments that failed alone -- as attempts that died when they are to blame
    (``blamed_failures``), else as unblamed failures, which give up on a comment once they went on long enough."""
    blamed = blamed_failures(failed, tried_alone=tried_alone, decided_any=decided_any, scorer=scorer)
    count_failed_attempt(blamed)
    unblamed = [cid for cid in failed if cid not in blamed]
    if not unblamed:
        return
    try:
        redis_bus.note_unblamed_failures(unblamed)
    except redis.RedisError:  # the give-up only comes later
        log.warning("could not note the failed scoring of %s", unblamed, exc_info=True)


def blamed_failures(failed: Sequence[int], tried_alone: int, decided_any: bool, scorer: str | None) -> list[int]:
    """Which comments that failed to score alone are at fault: all of them if the scorer works, else none.

    It works if another comment of the same run was decided, or -- for a comment that came alone, with nothing to
    compare -- if a process scored comments with the same ``scorer`` (models and libraries: a model that does not
    load is none) a moment ago (``redis_bus.scoring_succeeded_recently``). When two or
    more comments were scored alone and every one failed, the scorer is broken (a bad model, a bug) and no comment
    is blamed, whatever succeeded before: they stay pending and the sweeper retries them, until they kept failing
    for ``BOUNCER_SCORE_GIVE_UP_SECONDS`` (``count_failures``, ``plan_attempts``).
    """
    if not failed or decided_any:
        return list(failed)
    if tried_alone > 1:
        return []
    if scorer is None:
        return []
    try:
        works = redis_bus.scoring_succeeded_recently(scorer)
    except redis.RedisError:
        works = False
    return list(failed) if works else []
