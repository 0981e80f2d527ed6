"""Shared fixtures: a real database (SQLite or PostgreSQL), a real Redis, a real Celery worker and web server.

Select the database with BOUNCER_TEST_DATABASE_URL (default: SQLite in a temp dir) and Redis with
BOUNCER_TEST_REDIS_URL (default redis://127.0.0.1:6379/0; four databases from that number are used and flushed).
A missing service fails the run loudly: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared labelled data (../shared/data); required, so its absence fails the run rather than skipping."""
    if not (SHARED_DATA / "spam" / "youtube.csv").is_file():
        raise RuntimeError(f"shared data not found at {SHARED_DATA}: the classifier tests need ../shared/data")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def bouncer_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of this test session: data dir, database, Redis; migrations applied."""
    data_dir = tmp_path_factory.mktemp("bouncer-data")
    db_url = os.environ.get("BOUNCER_TEST_DATABASE_URL") or f"sqlite:///{data_dir / 'test.db'}"
    redis_url = os.environ.get("BOUNCER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    probe = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        probe.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the tests need a real Redis at {redis_url}: {exc}", pytrace=False)
    base = int(redis_url.rsplit("/", 1)[1] or 0)
    for db in range(base, base + 4):
        redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{db}").flushdb()
    env = {
        "BOUNCER_DATA_DIR": str(data_dir),
        "BOUNCER_DATABASE_URL": db_url,
        "BOUNCER_REDIS_URL": redis_url,
        "BOUNCER_MODELS_DIR": str(data_dir / "models"),
        "BOUNCER_SWEEP_AFTER_SECONDS": "3",
        "BOUNCER_SWEEP_INTERVAL_SECONDS": "2",
        "BOUNCER_API_RATE_LIMIT": "100000/minute",
        "BOUNCER_LOG_LEVEL": "WARNING",
        # The session worker's beat must not purge what other tests seeded (hourly, at whatever time the run
        # crosses): retention is off unless a test sets it (tests/service/test_retention.py).
        "BOUNCER_RETAIN_REJECTED_DAYS": "0",
        "BOUNCER_RETAIN_PERSONAL_DATA_DAYS": "0",
        "BOUNCER_RETAIN_CALLBACKS_DAYS": "0",
        "BOUNCER_CALLBACK_ALLOW_PRIVATE": "true",  # the tests' blog receivers listen on loopback
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from service import redis_bus
    from service.config import settings
    from service.db import dispose_all
    from service.migrate import upgrade

    settings.cache_clear()
    redis_bus.reset_clients()
    dispose_all()
    if db_url.startswith("postgresql"):
        try:
            _reset_postgres(settings().database_url)
        except Exception as exc:
            pytest.fail(f"the tests need a real PostgreSQL at {db_url}: {exc}", pytrace=False)
    upgrade()
    yield env
    dispose_all()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    settings.cache_clear()


@pytest.fixture(scope="session")
def app(bouncer_env: dict[str, str]) -> Any:
    from service.app import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


def make_site(callback_url: str | None = None, name: str = "Test blog") -> dict[str, Any]:
    """Create a site; returns its id and (plain) keys."""
    from service.db import session_scope
    from service.sites import create_site

    with session_scope() as session:
        site, keys = create_site(session, name, "https://blog.example", callback_url)
        return {
            "id": site.id,
            "api_key": keys.api_key,
            "akismet_key": keys.akismet_key,
            "callback_secret": site.callback_secret,
        }


@pytest.fixture
def site(bouncer_env: dict[str, str]) -> dict[str, Any]:
    return make_site()


# How long a test's gunicorn or Celery worker may take to come up. Both import the app and load the models; on a
# busy 2-core machine (CI while something else trains) 60 s was seen to run out.
START_TIMEOUT = 180.0


def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class WorkerProcess:
    """A real Celery worker in a subprocess; tests may kill and restart it."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        pool: str = "threads",
        concurrency: int = 4,
        beat: bool = True,
        app: str = "workers.celery_app:celery",
        queues: str = "score,callbacks,default,retrain",
        name: str = "test",
    ) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.pool, self.concurrency, self.beat, self.app = pool, concurrency, beat, app
        self.queues, self.name = queues, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,  # a test may wrap the real app (tests/service/crashing_worker.py)
                "worker",
                "--pool",
                self.pool,
                "--concurrency",
                str(self.concurrency),
                "-Q",
                self.queues,
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                # the sweeper's schedule runs inside the test worker (unless a test must see the queue alone)
                *(["--beat", "--schedule", str(self.log_path.with_suffix(".beat-schedule"))] if self.beat else []),
                "-n",
                f"{self.name}-{os.getpid()}@%h",
            ],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until(self.alive, START_TIMEOUT, "the Celery worker to answer ping")
        except AssertionError:
            self.kill()  # no stray worker left behind to fail later tests
            raise

    def alive(self) -> bool:
        from celery import Celery

        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                raise AssertionError(f"the worker exited:\n{self.log_path.read_text()[-3000:]}")
            return False
        # Through this worker's own broker (the first database of its Redis URL), which a test may have given a
        # Redis of its own: the test process's app talks to the session's.
        celery_app = Celery(broker=self.env["BOUNCER_REDIS_URL"], set_as_current=False)
        try:
            return bool(celery_app.control.ping(timeout=0.5))
        except Exception:
            return False
        finally:
            celery_app.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)
        self.proc = None
        self._log.close()


@pytest.fixture(scope="session")
def worker(bouncer_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = WorkerProcess(bouncer_env, tmp_path_factory.mktemp("logs") / "worker.log")
    w.start()
    yield w
    w.kill(signal.SIGTERM)


class LiveServer:
    """The real web app under gunicorn on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "BOUNCER_BIND": f"127.0.0.1:{self.port}"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "service.wsgi:app",
                "--config",  # as bouncer web: the request metrics of both workers summed
                "python:service.gunicorn_config",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--worker-class",
                "gthread",
                "--workers",
                "2",
                "--threads",
                "16",
                "--timeout",
                "60",
            ],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            _wait_until(up, START_TIMEOUT, "the web server")
        except AssertionError:
            self.stop()  # no stray gunicorn left behind to fail later tests
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        self._log.close()


@pytest.fixture(scope="session")
def live_server(bouncer_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(bouncer_env, tmp_path_factory.mktemp("logs") / "web.log")
    server.start()
    yield server
    server.stop()


def post_comment(client: Any, key: str, body: dict[str, Any], wait: int | None = None) -> Any:
    url = "/api/v1/comments" + (f"?wait={wait}" if wait is not None else "")
    return client.post(
        url,
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


def _private_redis(tmp_path: Path, persist: bool) -> Iterator[dict[str, Any]]:
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed for this test"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    argv += ["--appendonly", "yes" if persist else "no"]
    state: dict[str, Any] = {"port": port, "proc": subprocess.Popen(argv, stdout=subprocess.DEVNULL)}

    def start() -> None:
        state["proc"] = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop() -> None:
        state["proc"].terminate()
        state["proc"].wait(10)

    state["start"], state["stop"] = start, stop
    time.sleep(0.5)
    yield state
    if state["proc"].poll() is None:
        stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Redis server of this test alone, so it can be stopped and started again; it keeps its data (append-only
    file). Yields ``port`` and ``start``/``stop`` functions."""
    yield from _private_redis(tmp_path, persist=True)


@pytest.fixture
def forgetful_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Like ``private_redis``, but a restart keeps nothing (no persistence): queued messages are lost with it."""
    yield from _private_redis(tmp_path, persist=False)


@pytest.fixture
def own_database(bouncer_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test alone, of the session's kind (a SQLite file, or a PostgreSQL schema): the
    session's worker and sweeper never see its comments. Yields its BOUNCER_DATABASE_URL."""
    from sqlalchemy import text

    from service.config import load_settings
    from service.db import engine, make_engine
    from service.migrate import upgrade

    shared = bouncer_env["BOUNCER_DATABASE_URL"]
    schema = f"own_{os.getpid()}_{time.monotonic_ns()}"
    if shared.startswith("postgres"):
        url = f"{shared}{'&' if '?' in shared else '?'}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp_path / 'own.db'}"
    coerced = load_settings({**bouncer_env, "BOUNCER_DATABASE_URL": url}).database_url
    admin = make_engine(load_settings(bouncer_env).database_url) if shared.startswith("postgres") else None
    if admin is not None:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    upgrade(coerced)
    yield url
    engine(coerced).dispose()
    if admin is not None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def decide_events(ids: list[int], database: str | None = None) -> dict[int, int]:
    """How many automatic decisions each comment got (exactly one each, however often its task was delivered)."""
    from sqlalchemy import func, select

    from service.db import session_scope
    from service.models import ModerationEvent

    with session_scope(database) as session:
        rows = session.execute(
            select(ModerationEvent.comment_id, func.count())
            .where(ModerationEvent.comment_id.in_(ids), ModerationEvent.action == "decide")
            .group_by(ModerationEvent.comment_id)
        ).all()
    return {int(cid): int(n) for cid, n in rows}


def forget_scoring_successes() -> None:
    """Forget that any scorer worked a moment ago (service.decisions.attempts.blamed_failures)."""
    from service import redis_bus

    attempts = redis_bus.client(redis_bus.BROKER_DB)
    for key in attempts.scan_iter(match=f"{redis_bus.SCORING_SUCCEEDED_KEY}:*"):
        attempts.delete(key)
