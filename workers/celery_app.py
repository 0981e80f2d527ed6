"""The worker's entry point: ``celery -A workers.celery_app:celery worker``."""

import logging
from typing import Any

from celery.signals import worker_init

from service.app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
log = logging.getLogger(__name__)


@worker_init.connect
def load_models(**_: Any) -> None:
    """Load and exercise the active models before the pool starts (prefork children inherit them), so the first
    comments after a start or restart are decided inside the API's wait budget instead of waiting on disk."""
    from service.scoring import warm_up

    with flask_app.app_context():
        try:
            versions = warm_up()
        except Exception:  # a missing or broken model must not stop the worker; scoring reports it per comment
            log.exception("could not load the models at start; they will be loaded on first use")
        else:
            log.info("models loaded: %s", versions)
