"""``GET /metrics`` (the Prometheus text format, parsed as Prometheus would) and ``GET /api/v1/ready``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, post_comment


def test_metrics_are_valid_prometheus_text_with_one_content_type(client: Any, site: dict[str, Any]) -> None:
    assert post_comment(client, site["api_key"], {"content": "counted while pending"}, wait=0).status_code == 202
    answer = client.get("/metrics")
    assert answer.status_code == 200
    # One charset parameter: Flask appended a second "; charset=utf-8" to prometheus_client's content type, a
    # malformed header (RFC 2045: a parameter must not be given more than once) that Prometheus 3, which fails
    # a scrape whose Content-Type it cannot parse, only tolerates because Go's parser lets equal repeats pass.
    content_type = answer.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=") and content_type.lower().count("charset=") == 1
    families = {f.name: f for f in text_string_to_metric_families(answer.get_data(as_text=True))}
    assert {"bouncer_comments", "bouncer_callbacks", "bouncer_queue_length"} <= set(families)
    pending = [s for s in families["bouncer_comments"].samples if s.labels == {"status": "pending", "decision": ""}]
    assert pending and pending[0].value >= 1
    queues = {s.labels["queue"] for s in families["bouncer_queue_length"].samples}
    assert {"score", "callbacks", "default", "retrain"} <= queues


def _decided_samples(client: Any) -> dict[tuple[str, str], float]:
    from service.metrics import COLLECTOR

    COLLECTOR._cached = (0.0, [])  # no 5-second cache between the two scrapes of a test
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    samples = families["bouncer_decided_comments"].samples
    return {(s.labels["decision"], s.labels["decided_by"]): s.value for s in samples}


def test_decided_comments_by_decision_and_decider(client: Any, site: dict[str, Any]) -> None:
    """Who decided is a label of a few values: the models, a moderator (whoever it is: no label per user), the blog."""
    from service.db import session_scope
    from service.models import Comment

    before = _decided_samples(client)
    with session_scope() as session:
        for decided_by in ("worker", "user:7", "user:8", "blog", "akismet", "import", "something-new", None):
            session.add(
                Comment(site_id=site["id"], content="x", status="decided", decision="hold", decided_by=decided_by)
            )
    after = _decided_samples(client)
    moved = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    # the session's worker may decide comments of earlier tests between the two scrapes: "model" moves by 1 or more
    assert moved.pop(("hold", "model"), 0) >= 1
    assert {k: v for k, v in moved.items() if k[1] != "model"} == {
        ("hold", "moderator"): 2,
        ("hold", "blog"): 1,
        ("hold", "blog_akismet"): 1,
        ("hold", "import"): 1,
        ("hold", "other"): 2,  # an unknown decider, and none stored (rows written without one, as tests do)
    }
    deciders = {"model", "model_web", "moderator", "blog", "blog_akismet", "import", "other"}
    assert {decided_by for _, decided_by in after} <= deciders


READY_PROBE = """
import json
from service.app import create_app
answer = create_app({"TESTING": True}).test_client().get("/api/v1/ready")
print(json.dumps({"status": answer.status_code, "body": answer.get_json()}))
"""


def test_ready_says_what_is_wrong_with_the_database(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    """Readiness exists to say what is wrong: 'OperationalError' alone does not tell refused from a missing schema."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    for url, reason in [
        ("postgresql://bouncer@127.0.0.1:1/bouncer", "OperationalError: connection failed: connection to server at"),
        # SELECT 1 answers without any table: the database was "ok" while every request would fail
        (f"sqlite:///{tmp_path / 'no-schema.db'}", "the database has no schema: run `bouncer db upgrade`"),
        (f"sqlite:///{tmp_path / 'behind.db'}", "the schema is at revision none, this code needs "),
        # a revision this code has no script of is newer (rolling upgrade): this process stays ready
        (f"sqlite:///{tmp_path / 'newer.db'}", None),
        (bouncer_env["BOUNCER_DATABASE_URL"], None),
    ]:
        if url.endswith(("behind.db", "newer.db")):
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
                if url.endswith("newer.db"):
                    conn.execute("INSERT INTO alembic_version VALUES ('9999')")
        probe = subprocess.run(
            [sys.executable, "-c", READY_PROBE],
            cwd=REPO,
            env={**env, "BOUNCER_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.returncode == 0, probe.stderr
        answer = json.loads(probe.stdout.strip().splitlines()[-1])
        database = answer["body"]["checks"]["database"]
        if reason is None:
            assert database == "ok", answer
        else:
            assert answer["status"] == 503 and answer["body"]["status"] == "not_ready"
            assert database.startswith("error: ") and reason in database, database
