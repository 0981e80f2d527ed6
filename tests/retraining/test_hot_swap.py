"""Acceptance 3: a promotion or rollback takes effect for the next decision of a running worker, no restart;
every decision records the model versions that made it."""

from __future__ import annotations

from typing import Any

from service import retraining
from service.scoring import registry
from tests.conftest import post_comment

# Distinct texts: a repeated one would trip the campaign checks, which are not what this test is about.
ORDINARY = [
    "Thank you for the clear explanation of pruning; I'll try it on our apple tree this spring.",
    "We made the lentil soup last night and it was lovely, though I added a little more cumin.",
    "Great photos of the harbour. Which time of day did you take the one with the fishing boats?",
]


def test_promotion_and_rollback_reach_the_running_worker(
    active_models: dict[str, str], worker: Any, client: Any, site: dict[str, Any]
) -> None:
    reg = registry()
    a = reg.active("spam")
    # Version B: the same weights with a reject-everything operating point, so the decision shows who decided.
    strict = {**a.manifest, "thresholds": {"approve_below": 0.0, "reject_at": 0.0}}
    b = reg.register("spam", a.pipeline, strict, status="candidate")
    pid = worker.proc.pid

    def decide(n: int) -> dict[str, Any]:
        r = post_comment(
            client, site["api_key"], {"content": ORDINARY[n], "author": {"name": f"Reader {n}"}}, wait=10000
        )
        assert r.status_code == 200, r.get_json()
        return dict(r.get_json())

    first = decide(0)
    assert first["model"]["spam"] == a.version and first["decision"] != "reject", first

    reg.promote("spam", b)
    second = decide(1)
    assert second["model"]["spam"] == b and second["decision"] == "reject"

    assert retraining.rollback("spam") == a.version
    third = decide(2)
    assert third["model"]["spam"] == a.version and third["decision"] != "reject", third
    assert third["model"]["abuse"] == active_models["abuse"]
    assert worker.proc.pid == pid  # the same worker process throughout
