"""Celery bound to the Flask app: JSON only, late acks, no results, one broker database."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask

from service.config import settings
from service.redis_bus import BROKER_DB

# Tasks take ids and change state only through conditional updates, so a redelivery is harmless.
TASK_DEFAULTS: dict[str, Any] = {"acks_late": True, "ignore_result": True}


def celery_config() -> dict[str, Any]:
    cfg = settings()
    return {
        "broker_url": cfg.celery_broker_url(BROKER_DB),
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        # A worker killed mid-task (kill -9, OOM) leaves its messages unacked: hand them back.
        "task_reject_on_worker_lost": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 64,  # must exceed the scoring batch size (celery-batches)
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Unacked messages of a dead worker come back after this; the sweeper covers the gap sooner.
            "visibility_timeout": 900,
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
            # Publishing from a web request tries once: the comment is stored and the sweeper retries later.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "broker_pool_limit": 32,
        "task_default_queue": "default",
        "task_routes": {
            "bouncer.score_comment": {"queue": "score"},
            "bouncer.deliver_callback": {"queue": "callbacks"},
            # Minutes of CPU and over a gigabyte: `bouncer up` gives it a worker of its own (service.cli_run).
            "bouncer.retrain": {"queue": "retrain"},
        },
        "include": ["workers.tasks", "workers.retrain_tasks"],
        "beat_schedule": {
            "sweep-pending": {"task": "bouncer.sweep_pending", "schedule": float(cfg.sweep_interval_seconds)},
            # Nightly: retrain each kind when enough new human labels arrived since the last retrain.
            "retrain-if-due": {"task": "bouncer.retrain_if_due", "schedule": crontab(minute=30, hour=3)},
            # Hourly, off the hour: data retention (delete old automatic rejects, erase old personal data).
            "purge": {"task": "bouncer.purge", "schedule": crontab(minute=47)},
        },
        "timezone": "UTC",
    }


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from the Flask app; tasks run inside the app context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config())
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
