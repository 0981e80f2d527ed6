"""The one place that talks to Redis: clients per concern, the per-comment decision notification, the per-comment
count of scoring attempts that died with their process and the per-comment record of failed scoring attempts no one
was blamed for."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from service.config import settings

# A fixed numbering of Redis databases per concern, so a flush of one never touches another.
BROKER_DB = 0  # and the scoring-attempt counts and failures: bookkeeping of the score queue's deliveries
NOTIFY_DB = 1
STREAM_DB = 2
LIMITS_DB = 3

NOTIFY_TTL_SECONDS = 120
# Outlives every way a scoring message comes back: requeued at once, the sweeper (seconds), the visibility timeout.
SCORE_ATTEMPTS_TTL_SECONDS = 24 * 3600

_lock = threading.Lock()
_clients: dict[tuple[int, str, int, int, int], redis.Redis] = {}


def client(
    db: int, *, socket_timeout: float | None = 5.0, connect_timeout: float = 2.0, retries: int = 3
) -> redis.Redis:
    """A pooled client for one Redis database, per process (pools must not cross a fork).

    The decision path asks for short timeouts and no retries, so a slow or absent Redis costs it milliseconds.
    """
    url = settings().redis_url_for(db)
    key = (os.getpid(), url, int((socket_timeout or 0) * 1000), int(connect_timeout * 1000), retries)
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                health_check_interval=30,
                max_connections=64,
                retry=Retry(NoBackoff(), 0) if retries == 0 else Retry(ExponentialBackoff(cap=1.0), retries),
            )
            _clients[key] = found
        return found


def reset_clients() -> None:
    with _lock:
        for c in _clients.values():
            c.close()
        _clients.clear()


def _decided_key(comment_id: int) -> str:
    return f"bouncer:decided:{comment_id}"


def notify_decided(payloads: dict[int, dict[str, Any]]) -> None:
    """Wake the requests waiting for these comments. A list, not pub/sub: a waiter that arrives late still finds it."""
    if not payloads:
        return
    pipe = client(NOTIFY_DB).pipeline(transaction=False)
    for comment_id, payload in payloads.items():
        key = _decided_key(comment_id)
        pipe.rpush(key, json.dumps(payload))
        pipe.expire(key, NOTIFY_TTL_SECONDS)
    pipe.execute()


def wait_decided(comment_id: int, timeout_ms: int) -> dict[str, Any] | None:
    """Block up to ``timeout_ms`` for the comment's decision notification; None when it did not come in time."""
    if timeout_ms <= 0:
        return None
    seconds = timeout_ms / 1000.0
    conn = client(NOTIFY_DB, socket_timeout=seconds + 2.0, connect_timeout=0.5, retries=0)
    found = conn.blpop([_decided_key(comment_id)], timeout=seconds)
    if found is None:
        return None
    _key, raw = cast(tuple[bytes, bytes], found)
    payload: dict[str, Any] = json.loads(raw)
    return payload


def _attempts_key(comment_id: int) -> str:
    return f"bouncer:score-attempts:{comment_id}"


def _attempts_client() -> redis.Redis:
    return client(BROKER_DB, socket_timeout=1.0, connect_timeout=1.0, retries=1)


def unfinished_scoring_attempts(comment_ids: Sequence[int]) -> dict[int, int]:
    """How many scoring attempts of each comment started and never finished (0 for nearly all)."""
    return scoring_records(comment_ids)[0]


def start_scoring_attempt(comment_ids: Sequence[int]) -> None:
    """Count an attempt of each comment before it starts; ``finish_scoring_attempt`` takes it back when it returns."""
    if not comment_ids:
        return
    pipe = _attempts_client().pipeline(transaction=False)
    for cid in comment_ids:
        pipe.incr(_attempts_key(cid))
        pipe.expire(_attempts_key(cid), SCORE_ATTEMPTS_TTL_SECONDS)
    pipe.execute()


# Take back one attempt per key, and drop a key at zero (nearly every comment's) rather than keep it for a day.
_FINISH_ATTEMPT_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
"""


def finish_scoring_attempt(comment_ids: Sequence[int]) -> None:
    """Take back the attempt ``start_scoring_attempt`` counted: it returned, so its process did not die on it."""
    if comment_ids:
        conn = _attempts_client()
        conn.register_script(_FINISH_ATTEMPT_LUA)(keys=[_attempts_key(cid) for cid in comment_ids])


def _failures_key(comment_id: int) -> str:
    return f"bouncer:score-failures:{comment_id}"


@dataclass(frozen=True)
class UnblamedFailures:
    """Scoring attempts of a comment that ran and raised without being blamed on it, and when the first and the
    latest of them raised (Unix time)."""

    count: int = 0
    first: float = 0.0
    last: float = 0.0

    @property
    def span(self) -> float:
        """For how long its scoring has kept failing: from the first failure to the latest."""
        return self.last - self.first


def note_unblamed_failures(comment_ids: Sequence[int], now: float | None = None) -> None:
    """Count a failed scoring attempt of each comment that was not blamed on it, with the time of the first and of
    the latest; kept ``SCORE_ATTEMPTS_TTL_SECONDS`` after the latest."""
    if not comment_ids:
        return
    at = time.time() if now is None else now
    pipe = _attempts_client().pipeline(transaction=False)
    for cid in comment_ids:
        key = _failures_key(cid)
        pipe.hincrby(key, "count", 1)
        pipe.hsetnx(key, "first", repr(at))
        pipe.hset(key, "last", repr(at))
        pipe.expire(key, SCORE_ATTEMPTS_TTL_SECONDS)
    pipe.execute()


def unblamed_scoring_failures(comment_ids: Sequence[int]) -> dict[int, UnblamedFailures]:
    """The unblamed failed scoring attempts of each comment (none for nearly all)."""
    return scoring_records(comment_ids)[1]


def scoring_records(comment_ids: Sequence[int]) -> tuple[dict[int, int], dict[int, UnblamedFailures]]:
    """Both records a batch is planned from (``unfinished_scoring_attempts``, ``unblamed_scoring_failures``), read in
    one round trip: every batch of every comment's decision reads them."""
    if not comment_ids:
        return {}, {}
    pipe = _attempts_client().pipeline(transaction=False)
    pipe.mget([_attempts_key(cid) for cid in comment_ids])
    for cid in comment_ids:
        pipe.hmget(_failures_key(cid), ["count", "first", "last"])
    values, *records = pipe.execute()
    died = {cid: int(value or 0) for cid, value in zip(comment_ids, cast(list[bytes | None], values), strict=True)}
    failures = {
        cid: UnblamedFailures(int(count or 0), float(first or 0), float(last or 0))
        for cid, (count, first, last) in zip(comment_ids, records, strict=True)
    }
    return died, failures


# Set when a scoring attempt decides comments, one key per scorer (its models' versions and the libraries running
# them): while it lives, that scorer is known to work, so a comment that fails to score alone on it is taken to be at
# fault (service.decisions.attempts.blamed_failures). Another scorer's success proves nothing: a worker that loaded a
# newly promoted, broken model must not blame its comments because processes still on the old model decide theirs.
SCORING_SUCCEEDED_KEY = "bouncer:scoring-succeeded"
SCORING_SUCCEEDED_SECONDS = 60


def scoring_succeeded_key(scorer: str) -> str:
    return f"{SCORING_SUCCEEDED_KEY}:{scorer}"


def note_scoring_succeeded(scorer: str) -> None:
    """Remember for ``SCORING_SUCCEEDED_SECONDS`` that this scorer worked (one write per decided batch)."""
    _attempts_client().set(scoring_succeeded_key(scorer), 1, ex=SCORING_SUCCEEDED_SECONDS)


def scoring_succeeded_recently(scorer: str) -> bool:
    """True if some process scored comments with this scorer in the last ``SCORING_SUCCEEDED_SECONDS``."""
    return bool(_attempts_client().exists(scoring_succeeded_key(scorer)))


def claim_retrain_resend(run_id: int, seconds: int) -> bool:
    """True for the first caller in ``seconds`` that may send a queued retrain run's task again (the sweeper)."""
    return bool(client(NOTIFY_DB, socket_timeout=1.0).set(f"bouncer:retrain-resent:{run_id}", 1, nx=True, ex=seconds))


# Rows the retention purge removed, by kind: a hash in Redis, because a worker purges and the web serves /metrics.
PURGED_KEY = "bouncer:purged"


def count_purged(counts: dict[str, int]) -> None:
    """Add to the running totals of purged rows (``bouncer_purged_rows_total``)."""
    pipe = client(NOTIFY_DB, socket_timeout=1.0).pipeline(transaction=False)
    for kind, n in counts.items():
        pipe.hincrby(PURGED_KEY, kind, n)
    pipe.execute()


def purged_totals() -> dict[str, int]:
    """The running totals of purged rows by kind (empty after a Redis flush: Prometheus sees a counter reset)."""
    raw = cast(dict[bytes, bytes], client(NOTIFY_DB, socket_timeout=1.0).hgetall(PURGED_KEY))
    return {kind.decode(): int(n) for kind, n in raw.items()}


def ping() -> bool:
    try:
        return bool(client(NOTIFY_DB, socket_timeout=1.0).ping())
    except redis.RedisError:
        return False
