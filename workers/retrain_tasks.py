"""Celery tasks of retraining: thin wrappers around ``service.retraining``."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from service import retraining

log = logging.getLogger(__name__)

BUSY_RETRY_SECONDS = 30
BUSY_MAX_RETRIES = 60  # another retrain may run for up to half an hour


@shared_task(name="bouncer.retrain", bind=True, acks_late=True, ignore_result=True, max_retries=BUSY_MAX_RETRIES)
def retrain(self: Any, kind: str, requested_by: str = "", run_id: int | None = None) -> int | None:
    """Retrain ``kind`` (run ``run_id``, made by the admin view, or a new one); waits while another retrain runs.

    A failure is stored on the run (status ``failed``) and leaves the active model as it was; a redelivered task
    finds its run no longer queued and does nothing.
    """
    if run_id is None:
        try:
            run_id = retraining.create_run(kind, requested_by)
        except retraining.RetrainBusy:
            log.info("a %s retrain is already queued or running: nothing to do", kind)
            return None
    try:
        return retraining.retrain(kind, requested_by, run_id=run_id)
    except retraining.RetrainBusy as exc:
        if self.request.retries >= self.max_retries:
            retraining.mark_failed(run_id, f"gave up waiting: {exc}")
            return run_id
        raise self.retry(args=(kind, requested_by, run_id), countdown=BUSY_RETRY_SECONDS) from exc


@shared_task(name="bouncer.retrain_if_due", acks_late=True, ignore_result=True)
def retrain_if_due() -> dict[str, Any]:
    """Nightly (beat): retrain each kind with at least BOUNCER_RETRAIN_MIN_NEW_LABELS new labels
    (``retraining.new_labels_since_last_run``)."""
    return retraining.retrain_if_due()
