"""What every kind of answer looks like at the edges: errors, a database outage, security headers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

OUTAGE_PROBE = """
import json
from service.app import create_app
client = create_app().test_client()  # not TESTING: errors go through the handlers, as in production
api = {"Authorization": "Bearer bk_" + "x" * 43}
akismet = {"api_key": "abcdefabcdef", "blog": "https://blog.example", "user_ip": "203.0.113.7"}
answers = {}
for name, method, path, kwargs in [
    ("submit", "post", "/api/v1/comments", {"json": {"content": "hello"}, "headers": api}),
    ("get", "get", "/api/v1/comments/1", {"headers": api}),
    ("check", "post", "/1.1/comment-check", {"data": {**akismet, "comment_content": "hello"}}),
    ("verify", "post", "/1.1/verify-key", {"data": {"key": "abcdefabcdef", "blog": "https://blog.example"}}),
    ("metrics", "get", "/metrics", {}),
    ("ready", "get", "/api/v1/ready", {}),
]:
    answer = getattr(client, method)(path, **kwargs)
    answers[name] = {
        "status": answer.status_code,
        "headers": dict(answer.headers),
        "body": answer.get_data(as_text=True),
    }
print(json.dumps(answers))
"""


def test_database_outage_is_a_clean_503(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    """A database that refuses connections: the API and Akismet answer 503 with Retry-After in their own shape (it
    was a 500 'http_error', JSON even to Akismet clients, and a 300-line traceback in the log per request)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    env["BOUNCER_DATABASE_URL"] = "postgresql://bouncer:hunter2pw@127.0.0.1:1/bouncer"
    env["BOUNCER_LOG_LEVEL"] = "INFO"
    probe = subprocess.run(
        [sys.executable, "-c", OUTAGE_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout.strip().splitlines()[-1])
    for name in ("submit", "get"):
        answer = answers[name]
        assert answer["status"] == 503, answer
        assert answer["headers"]["Content-Type"] == "application/json"
        assert json.loads(answer["body"])["error"]["code"] == "database_unavailable"
        assert int(answer["headers"]["Retry-After"]) > 0
    for name in ("check", "verify", "metrics"):
        answer = answers[name]
        assert answer["status"] == 503, answer
        assert answer["headers"]["Content-Type"].startswith("text/plain")
        assert "database is unavailable" in answer["body"]
    assert answers["ready"]["status"] == 503
    assert json.loads(answers["ready"]["body"])["checks"]["database"].startswith("error: OperationalError")
    for answer in answers.values():
        assert answer["headers"]["X-Content-Type-Options"] == "nosniff"
        assert "hunter2pw" not in answer["body"]
    # the log says what failed in one line per request: no traceback, no password
    assert "database unavailable for POST /api/v1/comments: OperationalError: connection failed" in probe.stderr
    assert "Traceback" not in probe.stderr, probe.stderr[:3000]
    assert "hunter2pw" not in probe.stderr
