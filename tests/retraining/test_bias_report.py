"""An abuse retrain's report compares candidate and active on bias per identity group, and the run page shows it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from classifiers import CommentInput, Dataset
from service import retraining
from service.db import session_scope
from service.models import RetrainRun, utcnow
from service.scoring import registry
from tests.identity_comments import IDENTITY_COMMENTS


def _frozen() -> list[tuple[str, str, Dataset]]:
    data = Dataset(
        comments=[CommentInput(text=text) for text, _ in IDENTITY_COMMENTS],
        labels=np.array([label for _, label in IDENTITY_COMMENTS]),
        splits=["test"] * len(IDENTITY_COMMENTS),
        sources=["identity"] * len(IDENTITY_COMMENTS),
    )
    return [("identity (test)", "base_test", data)]


def test_an_abuse_report_compares_the_bias_per_identity_group(
    active_models: dict[str, str], admin_client: tuple[Any, str]
) -> None:
    active = registry().active("abuse")
    sets = retraining.compare(active.pipeline, active.thresholds, active, _frozen(), by_identity=True)
    groups = sets[0]["candidate"]["by_identity"]
    assert set(groups) == {"religion", "gender", "(none)"}
    assert groups["religion"]["n"] == 3 and groups["religion"]["positives"] == 1
    assert sets[0]["active"]["by_identity"] == groups  # the same model on both sides
    spam = registry().active("spam")
    assert "by_identity" not in retraining.compare(spam.pipeline, spam.thresholds, spam, _frozen())[0]["candidate"]

    report = {
        "kind": "abuse",
        "sets": sets,
        "thresholds": {"candidate": asdict(active.thresholds), "active": asdict(active.thresholds)},
        "labels": {"train": 0, "holdout": 0},
        "decision": "needs_review",
        "reasons": ["a report written by this test"],
    }
    with session_scope() as db:
        run = RetrainRun(
            kind="abuse", status="needs_review", active_version=active.version, report=report, finished_at=utcnow()
        )
        db.add(run)
        db.flush()
        run_id = run.id
    client, _token = admin_client
    page = client.get(f"/admin/retraining/runs/{run_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="bias"' in html and "Bias per identity group" in html
    religion = groups["religion"]
    clean = f"{religion['negatives_not_approved'] * 100:.0f}%"
    assert '<td>religion</td><td class="num">3</td><td class="num">1</td>' in html
    assert f"{clean} / {clean}" in html and "<td>no group</td>" in html
