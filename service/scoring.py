"""The models of this process: one registry, hot-swapped when an admin promotes or rolls back."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy
import sklearn

from classifiers import KINDS, CommentInput, LoadedModel, ModelRegistry, ModelScore
from service.config import settings
from service.models import Comment

_lock = threading.Lock()
_registry: ModelRegistry | None = None


def registry() -> ModelRegistry:
    global _registry
    with _lock:
        if _registry is None or str(_registry.root) != str(settings().models_dir):
            _registry = ModelRegistry(settings().models_dir)
        return _registry


def reset_registry() -> None:
    global _registry
    with _lock:
        _registry = None


def active_models() -> dict[str, LoadedModel]:
    """The active model of each kind; cheap when nothing changed (the registry checks its pointer file)."""
    reg = registry()
    return {kind: reg.active(kind) for kind in KINDS}


def scorer_identity() -> str | None:
    """What scores comments in this process: its active models' versions and the libraries that run them (None when
    a model does not load). Whether scoring works is known per scorer (``service.decisions.attempts``)."""
    try:
        models = active_models()
    except Exception:
        return None
    versions = [f"{kind}={model.version}" for kind, model in sorted(models.items())]
    return ",".join([*versions, f"sklearn={sklearn.__version__}", f"numpy={numpy.__version__}"])


def warm_up() -> dict[str, str]:
    """Load every kind's active model and score one comment with each (first-use costs paid up front)."""
    models = active_models()
    sample = [CommentInput(text="Thanks for the post, this was a helpful read.", author_name="Reader")]
    for model in models.values():
        model.score(sample)
    return {kind: model.version for kind, model in models.items()}


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def comment_input(c: Comment) -> CommentInput:
    """What the classifiers see of a stored comment."""
    written = _aware(c.created_at) or _aware(c.received_at)
    published = _aware(c.post_published_at)
    seconds = (written - published).total_seconds() if written and published else None
    return CommentInput(
        text=c.content,
        author_name=c.author_name,
        author_email=c.author_email,
        author_url=c.author_url,
        ip=c.author_ip,
        user_agent=c.user_agent,
        post_title=c.post_title,
        post_excerpt=c.post_excerpt,
        post_url=c.post_url,
        honeypot=bool(c.honeypot.strip()),
        seconds_since_post=seconds,
        lang=c.lang,
        type=c.type,
    )


def score_comments(comments: Sequence[Comment]) -> tuple[dict[str, LoadedModel], dict[str, list[ModelScore]]]:
    """Score a batch with every kind's active model; returns the models used and their scores."""
    models = active_models()
    inputs = [comment_input(c) for c in comments]
    return models, {kind: model.score(inputs) for kind, model in models.items()}
