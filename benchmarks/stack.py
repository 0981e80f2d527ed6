"""Start a local Bouncer stack (gunicorn + Celery worker) in a temp data dir for the benchmark scripts."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``samples`` (any order): the smallest value that at least ``p`` % of
    them do not exceed, so a p95 of ten runs is the tenth (the slowest), never one below the median."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server (``bouncer up``'s embedded one) on a socket in a temp dir: yields its URL.

    The benchmarks' default, so that a run never flushes databases of a Redis somebody else uses.
    """
    from service import embedded_redis

    data_dir = Path(tempfile.mkdtemp(prefix="bouncer-bench-redis-"))
    proc = subprocess.Popen(
        embedded_redis.redis_server_argv(data_dir), stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while not embedded_redis.ping(data_dir):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private redis-server did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield f"unix://{embedded_redis.socket_path(data_dir)}?db=0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def redis_for_benchmark(redis_url: str | None) -> Iterator[str]:
    """``redis_url`` with the 4 databases from its number flushed, or a private Redis when it is None."""
    if redis_url is None:
        with private_redis() as url:
            yield url
        return
    import redis

    base, _, number = redis_url.rpartition("/")
    for db in range(int(number or 0), int(number or 0) + 4):
        client = redis.Redis.from_url(f"{base}/{db}")
        client.flushdb()
        client.close()
    yield redis_url


@contextmanager
def local_stack(
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    web_workers: int = 2,
    web_threads: int = 16,
    worker_pool: str = "prefork",
    worker_concurrency: int = 2,
    port: int = 8765,
) -> Iterator[dict[str, str]]:
    """Yield ``{"url", "api_key", "akismet_key", "database_url", "data_dir"}`` of a running stack; stop it after.

    ``redis_url`` None (the default): a private Redis for the run; else the 4 databases from its number are flushed.
    """
    with redis_for_benchmark(redis_url) as url:
        yield from _stack(url, database_url, web_workers, web_threads, worker_pool, worker_concurrency, port)


def _stack(
    redis_url: str,
    database_url: str | None,
    web_workers: int,
    web_threads: int,
    worker_pool: str,
    worker_concurrency: int,
    port: int,
) -> Iterator[dict[str, str]]:
    data_dir = Path(tempfile.mkdtemp(prefix="bouncer-bench-"))
    env = {
        **os.environ,
        "BOUNCER_DATA_DIR": str(data_dir),
        "BOUNCER_DATABASE_URL": database_url or f"sqlite:///{data_dir / 'bench.db'}",
        "BOUNCER_REDIS_URL": redis_url,
        "BOUNCER_BIND": f"127.0.0.1:{port}",
        "BOUNCER_API_RATE_LIMIT": "1000000/minute",
        "BOUNCER_LOG_LEVEL": "WARNING",
    }
    bouncer = str(Path(sys.executable).parent / "bouncer")
    subprocess.run([bouncer, "db", "upgrade"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [bouncer, "sites", "create", "--name", "bench", "--url", "https://bench.example"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    site = json.loads(created.stdout)
    logs = open(data_dir / "stack.log", "ab")  # noqa: SIM115 - closed with the stack
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "service.wsgi:app", "--bind", f"127.0.0.1:{port}",
             "--config", "python:service.gunicorn_config",
             "--worker-class", "gthread", "--workers", str(web_workers), "--threads", str(web_threads)],
            env=env, cwd=REPO, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app:celery", "worker", "--pool", worker_pool,
             "--concurrency", str(worker_concurrency), "-Q", "score,callbacks,default", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "-n", f"bench-{os.getpid()}@%h"],
            env=env, cwd=REPO, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
        ),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not become ready; see {data_dir / 'stack.log'}")
            time.sleep(0.3)
        yield {
            "url": url,
            "api_key": site["api_key"],
            "akismet_key": site["akismet_key"],
            "database_url": env["BOUNCER_DATABASE_URL"],
            "data_dir": str(data_dir),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        logs.close()
