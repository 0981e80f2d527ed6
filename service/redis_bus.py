"""The one place that talks to Redis: clients per concern and the per-comment decision notification."""

from __future__ import annotations

import json
import os
import threading
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from service.config import settings

# A fixed numbering of Redis databases per concern, so a flush of one never touches another.
BROKER_DB = 0
NOTIFY_DB = 1
STREAM_DB = 2
LIMITS_DB = 3

NOTIFY_TTL_SECONDS = 120

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


def ping() -> bool:
    try:
        return bool(client(NOTIFY_DB, socket_timeout=1.0).ping())
    except redis.RedisError:
        return False
