"""The admin models page: versions, metrics and the active model of each kind; promote and roll back.

Built on ``service.scoring.registry()`` (``classifiers.ModelRegistry``). Retraining is wired in by the retraining
work through ``models_page_extra()`` and the ``admin/_models_extra.html`` partial — nothing fake lives here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import RetrainRun

log = logging.getLogger(__name__)

KINDS = ("spam", "abuse")
# Metrics shown in the table, in this order when present; the rest are in the version's details.
HEADLINE_METRICS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "false_positive_rate", "accuracy")


@dataclass
class VersionRow:
    version: str
    created_at: str
    status: str
    active: bool
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    manifest: dict[str, Any]
    needs_retraining: bool = False  # trained under older feature code (classifiers.features.FEATURES_VERSION)


@dataclass
class KindOverview:
    kind: str
    versions: list[VersionRow] = field(default_factory=list)
    rollback_to: str | None = None  # the version a rollback would re-activate; None: nothing to roll back to
    error: str = ""

    @property
    def active(self) -> VersionRow | None:
        return next((v for v in self.versions if v.active), None)


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if hasattr(value, "_asdict"):
        return dict(value._asdict())
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return {"value": value}


def _row(info: Any) -> VersionRow:
    created = getattr(info, "created_at", "")
    status = str(getattr(info, "status", "") or "")
    return VersionRow(
        version=str(getattr(info, "version", "")),
        created_at=created.strftime("%Y-%m-%d %H:%M") if isinstance(created, datetime) else str(created or ""),
        status=status,
        active=status == "active",
        metrics=_as_dict(getattr(info, "metrics", None)),
        thresholds=_as_dict(getattr(info, "thresholds", None)),
        manifest=_as_dict(getattr(info, "manifest", None)),
        needs_retraining=bool(getattr(info, "needs_retraining", False)),
    )


def _registry() -> Any:
    """The process's model registry (imported late: the admin console must load even when models cannot)."""
    from service.scoring import registry

    return registry()


def overview() -> list[KindOverview]:
    """Each kind's versions, newest first; a registry error is shown on the page instead of failing it."""
    result = []
    for kind in KINDS:
        item = KindOverview(kind)
        try:
            rows = [_row(info) for info in _registry().versions(kind)]
            item.versions = sorted(rows, key=lambda r: r.created_at, reverse=True)
            item.rollback_to = _registry().rollback_target(kind)
        except Exception as exc:  # a missing or broken registry must not take the admin console down
            log.warning("model registry unavailable for %s", kind, exc_info=True)
            item.error = f"{type(exc).__name__}: {exc}"
        result.append(item)
    return result


def promote(kind: str, version: str) -> None:
    _registry().promote(kind, version)


def rollback(kind: str) -> str:
    """Re-activate the previous version; ``NothingToRollBack`` when there is none."""
    return str(_registry().rollback(kind))


def recent_runs(session: Session, limit: int = 10) -> list[RetrainRun]:
    return list(session.scalars(select(RetrainRun).order_by(RetrainRun.created_at.desc()).limit(limit)))


def models_page_extra() -> dict[str, Any]:
    """Extra template context for the models page: the retrain controls and the latest runs."""
    from service.admin.retraining import models_page_context

    return models_page_context()
