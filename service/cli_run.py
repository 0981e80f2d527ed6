"""Running Bouncer: ``bouncer web``, ``worker``, ``beat`` (one process each) and ``bouncer up`` (all of them).

``web``, ``worker`` and ``beat`` replace themselves with gunicorn or Celery (``sys.executable -m ...``, so the
interpreter and its environment are the ones running ``bouncer``): signals from Docker or systemd reach the
server directly. ``up`` runs the same argv as children of a small supervisor, behind an embedded Redis when
``BOUNCER_REDIS_URL`` is unset.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

import click

from service.config import Settings, settings, url_without_password

WSGI_APP = "service.wsgi:app"
# Its hooks give the workers one directory for the request metrics, so that a scrape sums every worker.
GUNICORN_CONFIG = "python:service.gunicorn_config"
CELERY_APP = "workers.celery_app:celery"
# A plain `bouncer worker` consumes every queue. `bouncer up` splits them: retraining takes minutes of CPU and over a
# gigabyte, so it gets a worker of its own, and scoring never waits behind it.
SCORING_QUEUES = ("score", "default", "callbacks")
RETRAIN_QUEUES = ("retrain",)
WORKER_QUEUES = (*SCORING_QUEUES, *RETRAIN_QUEUES)
WORKER_POOLS = ("prefork", "threads", "solo")
DEFAULT_POOL = "prefork"  # measured (docs/performance.md): scoring in 2 processes beats threads under one GIL

_pass_through = {"ignore_unknown_options": True, "allow_extra_args": False}


def _gunicorn_level(level: str) -> str:
    return {"WARN": "warning", "FATAL": "critical"}.get(level, level).lower()


def _celery_level(level: str) -> str:
    return {"WARN": "WARNING"}.get(level, level)


def web_argv(cfg: Settings, *, access_log: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """gunicorn with threaded workers; no preload, so every worker opens its own database and Redis pools."""
    argv = [
        sys.executable, "-m", "gunicorn",
        "--config", GUNICORN_CONFIG,
        "--bind", cfg.bind,
        "--worker-class", "gthread",
        "--workers", str(cfg.web_workers),
        "--threads", str(cfg.web_threads),
        # A request may wait up to BOUNCER_WAIT_MAX_MS for its decision; the timeout must stay well above it.
        "--timeout", str(max(30, cfg.wait_max_ms // 1000 + 20)),
        "--graceful-timeout", "10",
        "--keep-alive", "5",
        "--log-level", _gunicorn_level(cfg.log_level),
        "--error-logfile", "-",
        # the access log without keys in query strings (Akismet clients may send theirs so)
        "--logger-class", "service.gunicorn_logging.RedactingLogger",
    ]  # fmt: skip
    if access_log:
        argv += ["--access-logfile", "-"]
    return [*argv, *extra, WSGI_APP]


def worker_argv(
    cfg: Settings,
    *,
    pool: str,
    concurrency: int,
    queues: Sequence[str] = WORKER_QUEUES,
    extra: Sequence[str] = (),
) -> list[str]:
    """A Celery worker on ``queues`` (default: all of them)."""
    return [
        sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
        "--loglevel", _celery_level(cfg.log_level),
        "--pool", pool,
        "--concurrency", str(concurrency),
        "--queues", ",".join(queues),
        "-O", "fair",
        *extra,
    ]  # fmt: skip


def retrain_worker_argv(cfg: Settings) -> list[str]:
    """The retrain queue's own worker: one retrain at a time, in a child process replaced after each one, so the
    memory a training run takes goes back to the system."""
    extra = ["--max-tasks-per-child", "1", "--hostname", "retrain@%h"]
    return worker_argv(cfg, pool="prefork", concurrency=1, queues=RETRAIN_QUEUES, extra=extra)


def _queue_list(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    queues = tuple(dict.fromkeys(q.strip() for q in value.split(",") if q.strip()))
    unknown = [q for q in queues if q not in WORKER_QUEUES]
    if unknown or not queues:
        raise click.BadParameter(f"expected a comma-separated list of {', '.join(WORKER_QUEUES)}; got {value!r}")
    return queues


def beat_argv(cfg: Settings, *, extra: Sequence[str] = ()) -> list[str]:
    """Celery beat; its schedule state lives in the data dir. Run exactly one per deployment."""
    return [
        sys.executable, "-m", "celery", "-A", CELERY_APP, "beat",
        "--loglevel", _celery_level(cfg.log_level),
        "--schedule", str(cfg.data_dir / "celerybeat-schedule"),
        *extra,
    ]  # fmt: skip


def _exec(argv: list[str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def _pool_options(func: Callable[..., None]) -> Callable[..., None]:
    func = click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=None,
        help="Pool size [default: BOUNCER_WORKER_CONCURRENCY].",
    )(func)
    return click.option(
        "--pool",
        type=click.Choice(WORKER_POOLS),
        default=DEFAULT_POOL,
        show_default=True,
        help="Celery pool.",
    )(func)


@click.command(context_settings=_pass_through)
@click.option("--access-log/--no-access-log", default=False, help="Log every request to stdout.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def web(access_log: bool, extra: tuple[str, ...]) -> None:
    """Run the HTTP service (gunicorn). Extra arguments go to gunicorn."""
    _exec(web_argv(settings(), access_log=access_log, extra=extra))


@click.command(context_settings=_pass_through)
@_pool_options
@click.option(
    "--queues",
    default=",".join(WORKER_QUEUES),
    show_default=True,
    callback=_queue_list,
    help="Queues to consume, comma-separated; e.g. score,default,callbacks here and retrain on another worker.",
)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def worker(pool: str, concurrency: int | None, queues: tuple[str, ...], extra: tuple[str, ...]) -> None:
    """Run a Celery worker. Extra arguments go to "celery worker"."""
    cfg = settings()
    argv = worker_argv(cfg, pool=pool, concurrency=concurrency or cfg.worker_concurrency, queues=queues, extra=extra)
    _exec(argv)


@click.command(context_settings=_pass_through)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def beat(extra: tuple[str, ...]) -> None:
    """Run Celery beat (periodic tasks: sweeper, retraining, retention purge). Extra arguments go to "celery beat"."""
    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    _exec(beat_argv(cfg, extra=extra))


# -- bouncer up ------------------------------------------------------------------------------------------


def _connect_address(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return host, int(port)


def _accepts_connections(bind: str) -> bool:
    try:
        with socket.create_connection(_connect_address(bind), timeout=0.5):
            return True
    except OSError:
        return False


def _public_url(bind: str) -> str:
    host, port = _connect_address(bind)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _child_env(cfg: Settings) -> dict[str, str]:
    """The children read the same settings; the derived values are pinned so that every process agrees."""
    env = dict(os.environ)
    env["BOUNCER_DATA_DIR"] = str(cfg.data_dir)
    env["BOUNCER_REDIS_URL"] = cfg.redis_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


READY_TIMEOUT_SECONDS = 180.0  # the scoring worker loads the models; past this the banner says it is not ready


def _announce_when_ready(cfg: Settings, started: float, stopping: Callable[[], bool]) -> None:
    """Print the banner once ``/api/v1/ready`` answers 200 (a live scoring worker, the models loaded): the web answers
    seconds before a comment can be decided, and "up" must mean a comment sent now gets its decision."""
    import httpx

    url = f"{_public_url(cfg.bind)}/api/v1/ready"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not stopping():
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                click.echo(_banner(cfg, time.monotonic() - started))
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            click.echo(_banner(cfg, time.monotonic() - started, ready=False))
            return
        time.sleep(0.3)


def _banner(cfg: Settings, seconds: float, *, ready: bool = True) -> str:
    redis = f"embedded, {cfg.redis_url}" if cfg.embedded_redis else url_without_password(cfg.redis_url)
    url = _public_url(cfg.bind)
    head = (
        f"Bouncer is ready at {url}/ (in {seconds:.1f} s)"
        if ready
        else f"Bouncer is up at {url}/ but not ready after {seconds:.0f} s: see {url}/api/v1/ready and the log above"
    )
    return "\n".join(
        [
            "",
            head,
            "  pages      /api/v1 (API), /moderation/, /admin/",
            f"  data dir   {cfg.data_dir}",
            f"  database   {url_without_password(cfg.database_url)}",
            f"  redis      {redis}",
            '  new site   bouncer sites create --name "My blog" --url https://blog.example',
            "  moderator  bouncer users create --email you@example.com --role admin",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


@click.command()
@_pool_options
@click.option("--access-log/--no-access-log", default=False, help="Log every request to stdout.")
def up(pool: str, concurrency: int | None, access_log: bool) -> None:
    """Run everything on this machine: Redis (embedded when BOUNCER_REDIS_URL is unset), migrations, web,
    a scoring worker, a retrain worker and beat. Ctrl-C or SIGTERM stops all of them."""
    from service.embedded_redis import EmbeddedRedisError, redis_child
    from service.supervisor import ChildSpec, Supervisor, SupervisorError

    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if _accepts_connections(cfg.bind):
        raise click.ClickException(f"something already listens on {cfg.bind}; set BOUNCER_BIND to a free address")
    env = _child_env(cfg)
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    started = time.monotonic()
    try:
        if cfg.embedded_redis:
            supervisor.start(redis_child(cfg.data_dir))
        from service.cli_admin import database_errors
        from service.migrate import upgrade

        with database_errors():  # a database that is down or refuses us is a message, not a traceback
            upgrade()
        workers = concurrency or cfg.worker_concurrency
        scoring = worker_argv(cfg, pool=pool, concurrency=workers, queues=SCORING_QUEUES)
        supervisor.start(ChildSpec("worker", scoring, env, tier=1))
        supervisor.start(ChildSpec("retrain worker", retrain_worker_argv(cfg), env, tier=1))
        supervisor.start(ChildSpec("beat", beat_argv(cfg), env, tier=1))
        supervisor.start(
            ChildSpec(
                "web",
                web_argv(cfg, access_log=access_log),
                env,
                ready=lambda: _accepts_connections(cfg.bind),
                tier=2,
            )
        )
    except (SupervisorError, EmbeddedRedisError) as exc:
        supervisor.stop_all()
        supervisor.restore_signal_handlers()
        if supervisor.stopping:
            return
        raise click.ClickException(str(exc)) from exc
    except BaseException:
        supervisor.stop_all()
        raise
    click.echo(f"Bouncer started at {_public_url(cfg.bind)}/; waiting for the scoring worker to load the models")
    threading.Thread(
        target=_announce_when_ready, args=(cfg, started, lambda: supervisor.stopping), name="ready", daemon=True
    ).start()
    code = supervisor.run()
    supervisor.restore_signal_handlers()
    if code:
        raise click.ClickException("a process kept crashing, so Bouncer stopped; see the log above")
