"""Prometheus metrics at ``/metrics``: read from the database and Redis at scrape time, so every process agrees."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service import redis_bus, retention
from service.db import session_scope
from service.models import CallbackDelivery, Comment, CommentStatus

bp = Blueprint("metrics", __name__)
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
        try:
            broker = redis_bus.client(redis_bus.BROKER_DB, socket_timeout=1.0)
            for name in QUEUES:
                queue.add_metric([name], int(broker.llen(name)))  # type: ignore[arg-type]  # sync client
            totals = redis_bus.purged_totals()
            for kind in retention.KINDS:
                purged.add_metric([kind], totals.get(kind, 0))
        except Exception:  # Redis down: report what the database knows
            return [comments, decided, callbacks, queue]
        return [comments, decided, callbacks, queue, purged]


COLLECTOR = BouncerCollector()
_registry = CollectorRegistry()
_registry.register(COLLECTOR)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format."""
    # content_type, not mimetype: Flask appends "; charset=utf-8" to a text/* mimetype, and this one has it already
    return Response(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
