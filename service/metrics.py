"""Prometheus metrics at ``/metrics``: row counts read from the database and Redis at scrape time, so every process
agrees, and the request-duration histogram of every web process (prometheus_client's multiprocess mode under
gunicorn: service.gunicorn_config)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service import redis_bus, retention
from service.db import DATABASE_UNAVAILABLE, database_error_reason, session_scope
from service.models import CallbackDelivery, Comment, CommentStatus

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)
_CACHE_SECONDS = 5.0
# Every Celery queue (service.celery_setup's routes): a backlog of retrains is worth an alert too.
QUEUES = ("score", "callbacks", "default", "retrain")
# decided_by as a label: one value per kind of decider, never one per moderator (user:<id>).
_DECIDERS = {"worker": "model", "web": "model_web", "blog": "blog", "akismet": "blog_akismet", "import": "import"}


def decider(decided_by: str | None) -> str:
    """The bounded ``decided_by`` label of a comment's ``decided_by`` column (none stored: ``other``)."""
    if decided_by is None:
        return "other"
    if decided_by.startswith(("user:", "moderator:")):
        return "moderator"
    return _DECIDERS.get(decided_by, "other")


class BouncerCollector(Collector):
    """Comment counts by status and decision, callback states, queue depths and rows purged by retention."""

    def __init__(self) -> None:
        self._cached: tuple[float, list[Metric]] = (0.0, [])

    def collect(self) -> Iterator[Metric]:
        stamp, metrics = self._cached
        if time.monotonic() - stamp > _CACHE_SECONDS:
            metrics = self._read()
            self._cached = (time.monotonic(), metrics)
        yield from metrics

    def _read(self) -> list[Metric]:
        comments = GaugeMetricFamily(
            "bouncer_comments", "Stored comments by status and decision", labels=["status", "decision"]
        )
        decided = GaugeMetricFamily(
            "bouncer_decided_comments",
            "Stored decided comments by decision and who decided (model, model_web, moderator, blog, ...)",
            labels=["decision", "decided_by"],
        )
        callbacks = GaugeMetricFamily("bouncer_callbacks", "Callback deliveries by state", labels=["state"])
        queue = GaugeMetricFamily("bouncer_queue_length", "Messages waiting in a Celery queue", labels=["queue"])
        purged = CounterMetricFamily(
            "bouncer_purged_rows", "Rows the retention purge deleted or erased, by kind", labels=["kind"]
        )
        database = GaugeMetricFamily(
            "bouncer_database_up", "1 if the database answered this scrape, 0 if not (its row counts are then left out)"
        )
        try:
            self._read_rows(comments, decided, callbacks)
        except DATABASE_UNAVAILABLE as exc:
            # The scrape still answers: the request histogram (5xx, latency) matters most during an outage.
            log.warning("metrics: the database is unavailable, row counts left out: %s", database_error_reason(exc))
            database.add_metric([], 0)
            rows: list[Metric] = [database]
        else:
            database.add_metric([], 1)
            rows = [database, comments, decided, callbacks]
        try:
            broker = redis_bus.client(redis_bus.BROKER_DB, socket_timeout=1.0)
            for name in QUEUES:
                queue.add_metric([name], int(broker.llen(name)))  # type: ignore[arg-type]  # sync client
            totals = redis_bus.purged_totals()
            for kind in retention.KINDS:
                purged.add_metric([kind], totals.get(kind, 0))
        except Exception:  # Redis down: report what the database knows
            return [*rows, queue]
        return [*rows, queue, purged]

    @staticmethod
    def _read_rows(comments: GaugeMetricFamily, decided: GaugeMetricFamily, callbacks: GaugeMetricFamily) -> None:
        with session_scope() as session:
            for status, decision, count in session.execute(
                select(Comment.status, Comment.decision, func.count()).group_by(Comment.status, Comment.decision)
            ):
                comments.add_metric([status, decision or ""], count)
            by_decider: dict[tuple[str, str], int] = {}
            for decision, decided_by, count in session.execute(
                select(Comment.decision, Comment.decided_by, func.count())
                .where(Comment.status == CommentStatus.DECIDED)
                .group_by(Comment.decision, Comment.decided_by)
            ):
                labels = (decision or "", decider(decided_by))
                by_decider[labels] = by_decider.get(labels, 0) + count
            for labels, count in sorted(by_decider.items()):
                decided.add_metric(list(labels), count)
            for state, count in session.execute(
                select(CallbackDelivery.status, func.count()).group_by(CallbackDelivery.status)
            ):
                callbacks.add_metric([state], count)


# Set (by service.gunicorn_config) when several processes serve requests: each writes its samples to files there.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Most answers take milliseconds to a few tens of them (docs/performance.md: the webhook's p99 is about 0.1 s under
# load); a comment waiting for its decision may take up to BOUNCER_WAIT_MAX_MS (10 s by default).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # the endpoint label of a request no route matched (404, 405): never the path itself
# The method label of any other method a client makes up, so that it cannot create series at will.
OTHER_METHOD = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ENDPOINT_KEY = "bouncer.endpoint"  # the WSGI environ key under which the matched endpoint reaches the middleware

REQUEST_DURATION = Histogram(
    "bouncer_http_request_duration_seconds",
    "Time to answer an HTTP request, by Flask endpoint, method and status code",
    ["endpoint", "method", "status"],
    buckets=REQUEST_BUCKETS,
    registry=None,  # registered below on this module's registry only, never on prometheus_client's global one
)


class RequestMetrics:
    """WSGI middleware around the Flask app: observes how long each request took, by endpoint, method and status.

    It wraps the whole of Flask's handling (hooks, view, error handlers, teardown), so the figure is what the app
    costs a client short of the network. The status is the one given to the server; an exception that escapes Flask
    (gunicorn answers it) counts as a 500.
    """

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app
        # The histogram's child per label set, so a request pays a dict lookup, not labels()'s checks and lock.
        # Bounded like the labels; a race makes two threads look up the same child, which is harmless.
        self._children: dict[tuple[str, str, str], Histogram] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        status = "500"

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = status_line[:3]
            return start_response(status_line, headers, exc_info)

        try:
            return self.wsgi_app(environ, recording_start_response)
        finally:
            method = environ.get("REQUEST_METHOD", "")
            labels = (
                environ.get(_ENDPOINT_KEY) or UNMATCHED,
                method if method in _METHODS else OTHER_METHOD,
                status,
            )
            try:
                child = self._children.get(labels)
                if child is None:
                    child = self._children[labels] = REQUEST_DURATION.labels(*labels)
                child.observe(time.perf_counter() - started)
            except Exception:  # a metric that cannot be written (a full disk) must not fail the request
                log.exception("could not record the duration of %s %s", environ.get("REQUEST_METHOD"), labels[0])


def _note_endpoint() -> None:
    # Flask pops the request (its url_rule) before the middleware sees the answer: the endpoint goes in the environ.
    request.environ[_ENDPOINT_KEY] = request.endpoint


def init_request_metrics(app: Flask) -> None:
    """Observe every request of ``app`` in ``bouncer_http_request_duration_seconds``."""
    before: list[Callable[[], Any]] = app.before_request_funcs.setdefault(None, [])
    before.insert(0, _note_endpoint)  # before any hook that may refuse the request (413, 429, CSRF)
    app.wsgi_app = RequestMetrics(app.wsgi_app)  # type: ignore[method-assign]  # the middleware pattern Flask documents


def _scrape_registry() -> CollectorRegistry:
    """The row counts once, and the request histogram: summed from every process's files in multiprocess mode, else
    this process's own (one process: Flask's test client, ``flask run``)."""
    registry = CollectorRegistry()
    registry.register(COLLECTOR)
    if os.environ.get(MULTIPROC_DIR_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_DURATION)
    return registry


COLLECTOR = BouncerCollector()
_registry = _scrape_registry()


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format."""
    # content_type, not mimetype: Flask appends "; charset=utf-8" to a text/* mimetype, and this one has it already
    return Response(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
