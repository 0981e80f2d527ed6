"""Turn rule hits and model scores into one decision with reasons, under the site's thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.decisions.hits import RuleHit


@dataclass(frozen=True, slots=True)
class KindThresholds:
    approve_below: float
    reject_at: float


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    kind: str  # spam | abuse
    probability: float
    reasons: list[str]
    thresholds: KindThresholds
    version: str


@dataclass(slots=True)
class Outcome:
    decision: str  # approve | hold | reject
    category: str | None
    reasons: list[str] = field(default_factory=list)


_RANK = {"approve": 0, "hold": 1, "reject": 2}


def decide(hits: list[RuleHit], verdicts: list[ModelVerdict], leniency: float = 0.0) -> Outcome:
    """Allow rules win; then reject rules; then the models under the thresholds; hold rules set a floor."""
    allow = [h for h in hits if h.effect == "approve"]
    if allow:
        return Outcome("approve", None, [h.reason for h in allow])
    rejects = [h for h in hits if h.effect == "reject"]
    if rejects:
        notes = [h.reason for h in hits if h.effect in ("hold", "note")]
        return Outcome("reject", rejects[0].category or "spam", [h.reason for h in rejects] + notes)

    lenient = any(h.effect == "lenient" for h in hits)
    decision, category, reasons = "approve", None, []
    model_reasons: list[str] = []
    # The most confident verdict decides the category; a tie goes to abuse, the costlier to let through.
    for v in sorted(verdicts, key=lambda v: (v.probability - v.thresholds.reject_at, v.kind == "abuse")):
        reject_at = min(0.999, v.thresholds.reject_at + (leniency if lenient else 0.0))
        approve_below = min(reject_at, v.thresholds.approve_below + (leniency if lenient else 0.0))
        if v.probability >= reject_at:
            kind_decision = "reject"
        elif v.probability >= approve_below:
            kind_decision = "hold"
        else:
            continue
        if _RANK[kind_decision] >= _RANK[decision]:
            decision, category = kind_decision, v.kind
        label = "spam" if v.kind == "spam" else "abuse"
        model_reasons.append(
            f"{label} score {v.probability:.2f}" + (f": {', '.join(v.reasons[:3])}" if v.reasons else "")
        )

    holds = [h for h in hits if h.effect == "hold"]
    if holds and decision == "approve":
        decision, category = "hold", holds[0].category
    reasons = [h.reason for h in hits if h.effect in ("hold", "note", "lenient")] + model_reasons
    if decision == "approve" and not reasons:
        reasons = ["scores are below the site's thresholds"]
    return Outcome(decision, category, reasons)
