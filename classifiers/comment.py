"""The value types the service and the classifiers exchange."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("spam", "abuse")


@dataclass(frozen=True, slots=True)
class CommentInput:
    """One comment as the classifiers see it; every field but ``text`` may be empty."""

    text: str
    author_name: str = ""
    author_email: str = ""
    author_url: str = ""
    ip: str = ""
    user_agent: str = ""
    post_title: str = ""
    post_excerpt: str = ""
    post_url: str = ""
    honeypot: bool = False
    seconds_since_post: float | None = None  # comment time minus post publication time
    lang: str = ""
    type: str = ""  # comment, reply, trackback, pingback, contact-form, ...


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Operating point: ``p < approve_below`` approves, ``p >= reject_at`` rejects, in between holds."""

    approve_below: float
    reject_at: float

    def decide(self, probability: float) -> str:
        if probability >= self.reject_at:
            return "reject"
        if probability < self.approve_below:
            return "approve"
        return "hold"


@dataclass(frozen=True, slots=True)
class ModelScore:
    """A calibrated probability with the model's own reasons (most important first, at most 5)."""

    probability: float
    reasons: list[str] = field(default_factory=list)
    categories: dict[str, float] = field(default_factory=dict)
