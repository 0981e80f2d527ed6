"""What every kind of answer looks like at the edges: errors, a database outage, security headers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, free_port

OUTAGE_PROBE = """
import json
from service.app import create_app
client = create_app().test_client()  # not TESTING: errors go through the handlers, as in production
api = {"Authorization": "Bearer bk_" + "x" * 43}
akismet = {"api_key": "abcdefabcdef", "blog": "https://blog.example", "user_ip": "203.0.113.7"}
answers = {}
with client.session_transaction() as session:  # a moderator's session: the page asks the database who it is
    session.update({"uid": 1, "pw": "0" * 16, "sid": "s"})
for name, method, path, kwargs in [
    ("queue", "get", "/moderation/", {}),
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
    for name in ("check", "verify"):
        answer = answers[name]
        assert answer["status"] == 503, answer
        assert answer["headers"]["Content-Type"].startswith("text/plain")
        assert "database is unavailable" in answer["body"]
    # The scrape still answers, without the row counts: the request histogram (the 503s above) matters most now.
    metrics = answers["metrics"]
    assert metrics["status"] == 200 and metrics["headers"]["Content-Type"].startswith("text/plain"), metrics
    assert "bouncer_database_up 0.0" in metrics["body"] and "bouncer_comments{" not in metrics["body"]
    refused = 'bouncer_http_request_duration_seconds_count{endpoint="api.create_comment",method="POST",status="503"}'
    assert f"{refused} 1.0" in metrics["body"]
    queue = answers["queue"]
    assert queue["status"] == 503 and queue["headers"]["Content-Type"].startswith("text/html"), queue
    assert "database is unavailable" in queue["body"] and "Traceback" not in queue["body"]
    assert queue["headers"]["Content-Security-Policy"].startswith("default-src 'self'")
    assert answers["ready"]["status"] == 503
    assert json.loads(answers["ready"]["body"])["checks"]["database"].startswith("error: OperationalError")
    for answer in answers.values():
        assert answer["headers"]["X-Content-Type-Options"] == "nosniff"
        assert "hunter2pw" not in answer["body"]
    # the log says what failed in one line per request: no traceback, no password
    assert "database unavailable for POST /api/v1/comments: OperationalError: connection failed" in probe.stderr
    assert "metrics: the database is unavailable, row counts left out: OperationalError" in probe.stderr
    assert "Traceback" not in probe.stderr, probe.stderr[:3000]
    assert "hunter2pw" not in probe.stderr


def test_openapi_documents_the_outage_answer(client: Any) -> None:
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path, method in [("/api/v1/comments", "post"), ("/api/v1/comments/{comment_id}", "get")]:
        assert "503" in paths[path][method]["responses"], (path, method)


@contextmanager
def _bouncer_web(bouncer_env: dict[str, str], log_path: Path, *, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """`bouncer web` (gunicorn with our argv, access log on) on a free port; yields its base URL."""
    from service.cli_run import web_argv
    from service.config import load_settings

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    env.pop("FORWARDED_ALLOW_IPS", None)  # gunicorn's default: trust X-Forwarded-* from 127.0.0.1 and ::1
    env["BOUNCER_BIND"] = f"127.0.0.1:{port}"
    argv = web_argv(load_settings(env), access_log=True, extra=extra)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/api/v1/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_access_log_has_no_keys(bouncer_env: dict[str, str], site: dict[str, Any], tmp_path: Path) -> None:
    """`bouncer web --access-log`: a key in the query string (Akismet clients may send theirs so, get-stats and
    usage-limit are GETs) is not written to the log; the default format logged the whole request line."""
    log_path = tmp_path / "web.log"
    with _bouncer_web(bouncer_env, log_path) as base:
        akismet_key, api_key = site["akismet_key"], site["api_key"]
        form = {"blog": "https://blog.example", "user_ip": "203.0.113.7", "comment_content": "hello"}
        checked = httpx.post(f"{base}/1.1/comment-check?api_key={akismet_key}&is_test=1", data=form, timeout=30)
        assert checked.status_code == 200 and checked.text in ("true", "false")
        httpx.get(f"{base}/1.1/get-stats?key={akismet_key}&blog=https://blog.example", timeout=30)
        httpx.get(f"{base}/api/v1/ready?token={api_key}&Password=pw-in-query", timeout=30)
        httpx.get(f"{base}/login", headers={"Referer": f"{base}/login?api_key={akismet_key}"}, timeout=30)
    text = log_path.read_text()
    assert "POST /1.1/comment-check?api_key=***&is_test=1 HTTP/1.1" in text, text
    assert "GET /1.1/get-stats?key=***&blog=https://blog.example" in text
    assert "GET /api/v1/ready?token=***&Password=*** HTTP/1.1" in text
    for secret in (akismet_key, api_key, "pw-in-query"):
        assert secret not in text


def test_redact_query() -> None:
    from service.gunicorn_logging import redact_query, redact_uri

    assert redact_query("a=1&API_KEY=abc&api%5Fkey=def;key=&blog=x") == "a=1&API_KEY=***&api%5Fkey=***;key=***&blog=x"
    assert redact_uri("/1.1/verify-key") == "/1.1/verify-key"
    assert redact_uri("https://h/p?x=1&token=t#frag") == "https://h/p?x=1&token=***#frag"


def test_database_errors_do_not_show_statement_parameters(bouncer_env: dict[str, str]) -> None:
    """A failed statement's exception (logged with its traceback) names the SQL, not the values bound to it."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from service.db import engine

    with pytest.raises(DBAPIError) as err, engine().connect() as conn:
        conn.execute(text("SELECT no_such_column FROM sites WHERE callback_secret = :secret"), {"secret": "hunter2pw"})
    assert "no_such_column" in str(err.value)
    assert "hunter2pw" not in str(err.value)


CRASH_PROBE = """
import json
from service.app import create_app
app = create_app()
def boom():
    raise ZeroDivisionError("secret detail of the crash")
app.add_url_rule("/api/v1/boom", view_func=boom)
app.add_url_rule("/1.1/boom", view_func=boom)
app.add_url_rule("/boom", view_func=boom)
client = app.test_client()
print(json.dumps({p: [(a := client.get(p)).status_code, a.headers["Content-Type"], a.get_data(as_text=True)]
                  for p in ("/api/v1/boom", "/1.1/boom", "/boom")}))
"""


def test_a_crash_is_a_500_without_details(bouncer_env: dict[str, str]) -> None:
    """An unexpected error: the API's error shape coded internal_error (it was 'http_error'), an HTML page for the
    UI; neither shows the exception or a traceback (the log has it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    probe = subprocess.run(
        [sys.executable, "-c", CRASH_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout.strip().splitlines()[-1])
    for path in ("/api/v1/boom", "/1.1/boom"):
        status, content_type, body = answers[path]
        assert (status, content_type) == (500, "application/json")
        assert json.loads(body)["error"]["code"] == "internal_error"
    status, content_type, body = answers["/boom"]
    assert (status, content_type) == (500, "text/html; charset=utf-8")
    for _, _, body in answers.values():
        assert "secret detail" not in body and "Traceback" not in body and "ZeroDivisionError" not in body
    assert "ZeroDivisionError: secret detail of the crash" in probe.stderr  # the operator sees it in the log


HSTS = "max-age=31536000; includeSubDomains"


def test_hsts_only_over_https(client: Any) -> None:
    """Strict-Transport-Security on answers to HTTPS requests (pages, API, errors), never over plain HTTP; the app
    does not read X-Forwarded-Proto itself (gunicorn decides whom to believe, next test)."""
    for path in ("/login", "/api/v1/health", "/no-such-page", "/api/v1/no-such-endpoint"):
        assert client.get(path, base_url="https://bouncer.example").headers["Strict-Transport-Security"] == HSTS
        assert "Strict-Transport-Security" not in client.get(path).headers, path
        spoofed = client.get(path, headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" not in spoofed.headers, path


def test_hsts_behind_a_trusted_proxy(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    """Behind a TLS-terminating proxy, gunicorn turns X-Forwarded-Proto: https into an HTTPS request when the proxy's
    address is in its forwarded_allow_ips (by default 127.0.0.1 and ::1); from anyone else the header is ignored."""
    with _bouncer_web(bouncer_env, tmp_path / "trusted.log") as base:
        proxied = httpx.get(f"{base}/login", headers={"X-Forwarded-Proto": "https"}, timeout=30)
        assert proxied.headers["Strict-Transport-Security"] == HSTS
        assert "strict-transport-security" not in httpx.get(f"{base}/login", timeout=30).headers
    with _bouncer_web(bouncer_env, tmp_path / "untrusted.log", extra=("--forwarded-allow-ips", "192.0.2.1")) as base:
        spoofed = httpx.get(f"{base}/login", headers={"X-Forwarded-Proto": "https"}, timeout=30)
        assert spoofed.status_code == 200 and "strict-transport-security" not in spoofed.headers


PROXY_PROBE = """
import json, re, sys
from service.app import create_app
client = create_app().test_client()
login = client.get("/login").get_data(as_text=True)
token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
statuses = []
for forwarded in json.loads(sys.argv[1]):
    answer = client.post(
        "/login",
        data={"email": sys.argv[3], "password": "wrong", "csrf_token": token},
        headers={"X-Forwarded-For": forwarded, "X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": sys.argv[2]},  # every request comes from the proxy
    )
    statuses.append([answer.status_code, "Strict-Transport-Security" in answer.headers])
print(json.dumps(statuses))
"""


def _logins_through_a_proxy(bouncer_env: dict[str, str], proxies: str, proxy: str, forwarded: list[str]) -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    env |= {"BOUNCER_LOGIN_RATE_LIMIT": "2/minute", "BOUNCER_TRUSTED_PROXIES": proxies}
    # An address of its own: failed logins for an unknown address lock it too (other tests sign in as nobody@...)
    email = f"proxy-probe-{uuid.uuid4().hex[:8]}@example.test"
    probe = subprocess.run(
        [sys.executable, "-c", PROXY_PROBE, json.dumps(forwarded), proxy, email],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    return [tuple(answer) for answer in json.loads(probe.stdout.strip().splitlines()[-1])]


def test_login_limit_per_client_behind_a_trusted_proxy(bouncer_env: dict[str, str]) -> None:
    """Behind a proxy every login came from the proxy's address: one client's failed logins used up the limit of
    all. With BOUNCER_TRUSTED_PROXIES=1 the client is the last X-Forwarded-For address, the one the proxy appended:
    an address the client put in front of it does not get it a fresh bucket. X-Forwarded-Proto stays gunicorn's to
    believe or not (no HSTS here: the test client speaks plain HTTP)."""
    mallory, alice = "192.0.2.11", "192.0.2.12"
    answers = _logins_through_a_proxy(
        bouncer_env, "1", "10.0.0.5", [mallory, mallory, mallory, alice, f"203.0.113.9, {mallory}"]
    )
    assert answers == [(401, False), (401, False), (429, False), (401, False), (429, False)]


def test_forwarded_for_is_ignored_without_trusted_proxies(bouncer_env: dict[str, str]) -> None:
    """Clients reaching Bouncer directly: an X-Forwarded-For of their own choosing must not give them a new bucket."""
    answers = _logins_through_a_proxy(bouncer_env, "0", "10.0.0.6", ["192.0.2.21", "192.0.2.22", "192.0.2.23"])
    assert [status for status, _hsts in answers] == [401, 401, 429]
