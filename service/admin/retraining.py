"""Admin pages of retraining: versions with metrics, retrain now, progress, the report (candidate vs active on the
frozen sets, confusion at the thresholds, the gate's reasons), promote, roll back, history.

A page of a queued or running retrain refreshes itself with the ``Refresh`` response header (no script: the CSP
forbids inline script, and a header needs none).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from classifiers import KINDS, NothingToRollBack
from service import queue, retraining
from service.admin import bp
from service.auth.session import admin_required, require_user
from service.config import settings
from service.db import session_scope
from service.models import RetrainRun

log = logging.getLogger(__name__)

HISTORY_LIMIT = 50
REFRESH_SECONDS = 3
# Metrics of the side-by-side table, in order: (key, label, higher is better).
COMPARED = (
    ("roc_auc", "ROC-AUC", True),
    ("pr_auc", "PR-AUC", True),
    ("brier", "Brier", False),
    ("recall_at_reject", "recall at reject", True),
    ("ham_rejected", "ham rejected", False),
    ("positives_approved", "positives approved", False),
)


def metric(metrics: dict[str, Any] | None, key: str) -> float | None:
    """A metric of a report entry (operating-point rates live one level down)."""
    if not metrics:
        return None
    value = metrics.get("operating_point", {}).get(key) if key in ("ham_rejected", "positives_approved") else None
    value = metrics.get(key) if value is None else value
    return float(value) if isinstance(value, int | float) else None


def _versions(kind: str) -> tuple[list[dict[str, Any]], str, str | None]:
    """A kind's versions with their test metrics per source, the error that hid them (shown, not raised), and the
    version a rollback would re-activate (None: nothing to roll back to)."""
    try:
        infos = retraining.registry().versions(kind)
        rollback_to = retraining.registry().rollback_target(kind)
    except Exception as exc:  # a missing or broken registry must not take the page down
        log.warning("model registry unavailable for %s", kind, exc_info=True)
        return [], f"{type(exc).__name__}: {exc}", None
    rows = []
    for info in infos:
        test = info.metrics.get("test", {}) if isinstance(info.metrics, dict) else {}
        retrain = info.manifest.get("retrain", {})
        rows.append(
            {
                "version": info.version,
                "created_at": info.created_at,
                "status": info.status,
                "thresholds": info.thresholds,
                "test": {src: m.get("roc_auc") for src, m in sorted(test.items()) if isinstance(m, dict)},
                "retrain": retrain,
            }
        )
    return rows, "", rollback_to


def kind_summaries(db: Any) -> list[dict[str, Any]]:
    """Per kind: the running run, the latest finished run, and how many new labels the schedule has seen."""
    retraining.fail_interrupted_runs(db)  # a crashed worker's run must not show as running forever
    out = []
    for kind in KINDS:
        current = db.scalar(
            select(RetrainRun)
            .where(RetrainRun.kind == kind, RetrainRun.status.in_(("queued", "running")))
            .order_by(RetrainRun.id.desc())
        )
        last = db.scalar(
            select(RetrainRun)
            .where(RetrainRun.kind == kind, RetrainRun.status.not_in(("queued", "running")))
            .order_by(RetrainRun.id.desc())
        )
        out.append(
            {
                "kind": kind,
                "current": current,
                "progress": retraining.progress_fraction(current.progress) if current else None,
                "last": last,
                "new_labels": retraining.new_labels_since_last_run(db, kind),
            }
        )
    return out


def models_page_context() -> dict[str, Any]:
    """Context for ``admin/retraining_panel.html`` on the models page (retrain controls and progress)."""
    with session_scope() as db:
        return {"retrain_kinds": kind_summaries(db), "retrain_min_new_labels": settings().retrain_min_new_labels}


@bp.route("/retraining")
@admin_required
def retraining_overview() -> ResponseReturnValue:
    """Retrain controls and progress per kind, each kind's versions with metrics, and the retrain history."""
    with session_scope() as db:
        kinds = kind_summaries(db)
        history = list(db.scalars(select(RetrainRun).order_by(RetrainRun.id.desc()).limit(HISTORY_LIMIT)))
        total = db.scalar(select(func.count()).select_from(RetrainRun)) or 0
        versions = {kind: _versions(kind) for kind in KINDS}
        html = render_template(
            "admin/retraining.html",
            kinds=kinds,
            history=history,
            total=total,
            versions=versions,
            min_new_labels=settings().retrain_min_new_labels,
            title="Retraining",
        )
    refresh = any(k["current"] is not None for k in kinds)
    return html, 200, {"Refresh": str(REFRESH_SECONDS)} if refresh else {}


@bp.route("/retraining/<kind>/run", methods=["POST"])
@admin_required
def retraining_start(kind: str) -> ResponseReturnValue:
    """Queue a retrain of ``kind`` now; the run's page shows its progress."""
    if kind not in KINDS:
        abort(404)
    actor = require_user().actor
    try:
        run_id = retraining.create_run(kind, actor)
    except retraining.RetrainBusy as exc:
        flash(str(exc), "info")
        return redirect(url_for("admin.retraining_overview"))
    # After the commit, like every enqueue: the worker must find the run. Broker down: the run must not stay queued.
    if not queue.enqueue_retrain(kind, actor, run_id):
        retraining.mark_failed(run_id, "could not queue the retrain: the broker (Redis) did not take it")
        flash("The retrain could not be queued (is Redis up?).", "warning")
    else:
        flash(f"Retraining the {kind} model.", "success")
    return redirect(url_for("admin.retraining_run", run_id=run_id))


@bp.route("/retraining/runs/<int:run_id>")
@admin_required
def retraining_run(run_id: int) -> ResponseReturnValue:
    """One run: progress while it runs; then the report — candidate vs active side by side, confusion, reasons."""
    with session_scope() as db:
        retraining.fail_interrupted_runs(db)  # a crashed worker's run must not show as running forever
        run = db.get(RetrainRun, run_id) or abort(404)
        try:
            active_version = retraining.registry().active(run.kind).version
        except Exception:  # no active model (fresh install): the page still shows the run
            active_version = None
        html = render_template(
            "admin/retraining_run.html",
            run=run,
            report=run.report or {},
            progress=retraining.progress_fraction(run.progress),
            active_version=active_version,
            compared=COMPARED,
            metric=metric,
            title=f"Retrain #{run.id}",
        )
        running = run.status in ("queued", "running")
    return html, 200, {"Refresh": str(REFRESH_SECONDS)} if running else {}


@bp.route("/retraining/runs/<int:run_id>/promote", methods=["POST"])
@admin_required
def retraining_promote(run_id: int) -> ResponseReturnValue:
    """Promote the run's candidate (an admin's decision, e.g. after reading why it needed review)."""
    try:
        version = retraining.promote_candidate(run_id, require_user().actor)
    except Exception as exc:  # the registry says why (unknown version, artifact failed to load): show it
        flash(f"Could not promote: {exc}", "warning")
    else:
        flash(f"{version} is now active; workers use it from their next decision.", "success")
    return redirect(url_for("admin.retraining_run", run_id=run_id))


@bp.route("/retraining/<kind>/rollback", methods=["POST"])
@admin_required
def retraining_rollback(kind: str) -> ResponseReturnValue:
    """Re-activate the previous version of ``kind``."""
    if kind not in KINDS:
        abort(404)
    try:
        version = retraining.rollback(kind)
    except NothingToRollBack:  # the button is not shown then, but a stale page or a second admin may post
        flash(f"There is no earlier {kind} model to roll back to.", "info")
    except Exception as exc:  # the registry says why (the earlier version failed to load): show it
        flash(f"Could not roll back the {kind} model: {exc}", "warning")
    else:
        flash(f"{kind} model rolled back to {version}; workers use it from their next decision.", "success")
    return redirect(url_for("admin.retraining_overview"))
