"""Start a local Bouncer stack (gunicorn + Celery worker) in a temp data dir for the benchmark scripts."""

from __future__ import annotations

import json
import os
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


@contextmanager
def local_stack(
    *,
    redis_url: str,
    database_url: str | None = None,
    web_workers: int = 2,
    web_threads: int = 16,
    worker_pool: str = "prefork",
    worker_concurrency: int = 2,
    port: int = 8765,
) -> Iterator[dict[str, str]]:
    """Yield ``{"url", "api_key", "akismet_key", "database_url", "data_dir"}`` of a running stack; stop it after."""
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
    import redis

    base = redis.Redis.from_url(redis_url)
    number = int(redis_url.rsplit("/", 1)[1] or 0)
    for db in range(number, number + 4):
        redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{db}").flushdb()
    base.close()
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
