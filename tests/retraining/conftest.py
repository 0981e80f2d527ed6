"""Retraining fixtures: active models to compare against, labelled comments, a signed-in admin."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.retraining.campaign import campaign_comment, ham_comment


@pytest.fixture(scope="session")
def active_models(bouncer_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The active spam and abuse versions (the starter models when they ship). Restored after the session.

    Without a starter model, the spam model is trained the way the starter is (all training-allowed data) so the
    end-to-end test compares against a real baseline; the abuse model only has to exist, so a sample suffices.
    """
    from classifiers import train_model
    from service import retraining
    from service.scoring import registry

    reg = registry()
    found: dict[str, str] = {}
    for kind in ("spam", "abuse"):
        try:
            found[kind] = reg.active(kind).version
        except LookupError:
            fraction = 1.0 if kind == "spam" else 0.1
            base, _ = retraining.load_base(kind, retraining.RetrainOptions(base_fraction=fraction))
            pipeline, manifest = train_model(kind, base)
            found[kind] = reg.register(kind, pipeline, manifest, status="active")
    yield found
    for kind, version in found.items():
        if reg.active(kind).version != version:
            reg.promote(kind, version)


def add_labelled(site_id: int, items: list[tuple[str, str]], source: str = "moderator") -> list[int]:
    """Insert held comments and label them through the one human-decision path; returns the comment ids."""
    from service.db import session_scope
    from service.human_decisions import apply_label
    from service.models import Comment

    ids = []
    with session_scope() as db:
        for text, label in items:
            c = Comment(
                site_id=site_id,
                content=text,
                author_name=random.Random(text).choice(["Jenny", "Mark T.", "Priya", "Sam", "Ola"]),
                status="decided",
                decision="hold",
                auto_decision="hold",
                decided_by="worker",
                received_at=datetime.now(UTC),
            )
            db.add(c)
            db.flush()
            result = apply_label(db, c, label, source=source, actor="user:1", notify_blog=False)
            assert result.applied, result.message
            ids.append(c.id)
    return ids


def campaign_labels(n_spam: int, n_ham: int, seed: int) -> list[tuple[str, str]]:
    """Campaign spam and ordinary comments, interleaved in time (so the newest labels hold both)."""
    rng = random.Random(seed)
    items = [(campaign_comment(rng), "spam") for _ in range(n_spam)] + [(ham_comment(rng), "ham") for _ in range(n_ham)]
    rng.shuffle(items)
    return items


@pytest.fixture
def admin_client(app: Any) -> tuple[Any, str]:
    """A Flask test client signed in as a new admin, and its CSRF token."""
    from tests.ui.helpers import login, make_user

    client = app.test_client()
    token = login(client, make_user("admin"))
    return client, token
