"""Threshold settings of a site and their preview: what the last comments would have become under them.

The preview replays the stored model scores only (rule hits such as allow/block lists are not replayed), so it
shows how a threshold moves the model's share of the decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Comment, Site

KINDS = ("spam", "abuse")
PREVIEW_COMMENTS = 1000
# When the models cannot be asked (not loaded yet), the preview uses these for "model default".
FALLBACK_DEFAULTS = {"approve_below": 0.5, "reject_at": 0.9}


@dataclass(frozen=True)
class Thresholds:
    """Per kind: (approve below, reject at); None means the active model's own operating point."""

    values: dict[str, tuple[float | None, float | None]]

    @classmethod
    def of_site(cls, site: Site) -> Thresholds:
        return cls({k: (getattr(site, f"{k}_approve_below"), getattr(site, f"{k}_reject_at")) for k in KINDS})

    @classmethod
    def parse(cls, form: Any, defaults: dict[str, dict[str, float]] | None = None) -> Thresholds:
        """From a form or query string; raises ValueError with a message for the admin.

        A field left empty takes the active model's value (``defaults``, from ``model_defaults()`` when not given),
        and the pair in effect is what is checked: 'approve below' 0.99 beside a model's 'reject at' 0.976 would be
        saved and shown, yet the policy caps it at 0.976 — the form would say one thing and the decisions another.
        Equal values are allowed: nothing is held.
        """
        defaults = model_defaults() if defaults is None else defaults
        values: dict[str, tuple[float | None, float | None]] = {}
        for kind in KINDS:
            approve = _score(form.get(f"{kind}_approve_below"), f"{kind}: approve below")
            reject = _score(form.get(f"{kind}_reject_at"), f"{kind}: reject at")
            effective_approve = defaults[kind]["approve_below"] if approve is None else approve
            effective_reject = defaults[kind]["reject_at"] if reject is None else reject
            if effective_approve > effective_reject:
                shown = {
                    "approve": f"{effective_approve:g}" + ("" if approve is not None else " (the model's)"),
                    "reject": f"{effective_reject:g}" + ("" if reject is not None else " (the model's)"),
                }
                raise ValueError(
                    f"{kind}: 'approve below' ({shown['approve']}) must not be above 'reject at' ({shown['reject']})"
                )
            values[kind] = (approve, reject)
        return cls(values)

    def apply_to(self, site: Site) -> None:
        for kind, (approve, reject) in self.values.items():
            setattr(site, f"{kind}_approve_below", approve)
            setattr(site, f"{kind}_reject_at", reject)


def _score(raw: str | None, name: str) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return value


def model_defaults() -> dict[str, dict[str, float]]:
    """The active models' operating points, or the fallback when the models cannot be read."""
    defaults = {k: dict(FALLBACK_DEFAULTS) for k in KINDS}
    try:
        from service.scoring import active_models

        for kind, model in active_models().items():
            defaults[kind] = {
                "approve_below": float(model.thresholds.approve_below),
                "reject_at": float(model.thresholds.reject_at),
            }
    except Exception:  # no model yet (fresh install) or the registry is being changed: show the fallback
        pass
    return defaults


def preview(session: Session, site_id: int, thresholds: Thresholds, limit: int = PREVIEW_COMMENTS) -> dict[str, int]:
    """How many of the site's last ``limit`` scored comments each decision would take under ``thresholds``."""
    defaults = model_defaults()
    effective = {
        kind: (
            defaults[kind]["approve_below"] if approve is None else approve,
            defaults[kind]["reject_at"] if reject is None else reject,
        )
        for kind, (approve, reject) in thresholds.values.items()
    }
    rows = session.execute(
        select(Comment.spam_score, Comment.abuse_score)
        .where(Comment.site_id == site_id, Comment.spam_score.is_not(None))
        .order_by(Comment.received_at.desc())
        .limit(limit)
    ).all()
    counts = {"approve": 0, "hold": 0, "reject": 0, "total": len(rows)}
    for spam, abuse in rows:
        outcome = "approve"
        for kind, score in (("spam", spam), ("abuse", abuse)):
            approve_below, reject_at = effective[kind]
            if score is None:
                continue
            if score >= reject_at:
                outcome = "reject"
            elif score >= approve_below and outcome == "approve":
                outcome = "hold"
        counts[outcome] += 1
    return counts
