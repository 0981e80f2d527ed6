"""Rate limiting on the Akismet API: per key, 429 with Retry-After, and Akismet clients see an error.

Also what made-up keys do to the limits (of every API and of the login page): nothing; and that an oversized request
is refused before the limiter (or CSRF) reads it, and counted by the limiter all the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import akismet
import httpx
import pytest
import redis

from service.config import settings
from service.redis_bus import LIMITS_DB
from tests.akismet.harness import BLOG, bouncer_http, python_client
from tests.conftest import REPO, LiveServer, make_site

LIMIT = 5


@pytest.fixture(scope="module")
def limited_server(bouncer_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A second gunicorn with a tiny limit (the limit is read at start-up)."""
    env = {**bouncer_env, "BOUNCER_API_RATE_LIMIT": f"{LIMIT}/minute", "BOUNCER_LOGIN_RATE_LIMIT": f"{LIMIT}/minute"}
    server = LiveServer(env, tmp_path_factory.mktemp("logs") / "limited-web.log")
    server.start()
    yield server
    server.stop()


def test_429_with_retry_after_per_key(limited_server: LiveServer) -> None:
    noisy, quiet = make_site(name="Noisy blog"), make_site(name="Quiet blog")
    form = {"key": noisy["akismet_key"], "blog": BLOG}
    with httpx.Client(base_url=limited_server.url) as http:
        for _ in range(LIMIT):
            assert http.post("/1.1/verify-key", data=form).text == "valid"
        limited = http.post("/1.1/verify-key", data=form)
        # Another key is not starved by the noisy one.
        other = http.post("/1.1/verify-key", data={"key": quiet["akismet_key"], "blog": BLOG})
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["content-type"].startswith("text/plain")
    assert other.text == "valid"

    with bouncer_http(limited_server.url) as http, pytest.raises(akismet.RequestError, match="429"):
        python_client(http, noisy["akismet_key"]).verify_key()  # limits count per key and endpoint


@pytest.mark.parametrize("path", ["/1.1/comment-check", "/1.1/submit-spam", "/1.2/usage-limit", "/1.1/get-stats"])
def test_every_akismet_endpoint_is_limited(limited_server: LiveServer, site: dict[str, Any], path: str) -> None:
    form = {"api_key": site["akismet_key"], "blog": BLOG}  # no user_ip: answered "invalid", but still counted
    with httpx.Client(base_url=limited_server.url) as http:
        statuses = [http.post(path, data=form).status_code for _ in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]


def test_made_up_keys_share_one_limit_per_client(limited_server: LiveServer) -> None:
    # Each made-up key had a bucket of its own, so a client rotating random keys was never limited at all.
    real = make_site(name="Real blog")
    with httpx.Client(base_url=limited_server.url) as http:
        made_up = [
            http.post("/1.1/verify-key", data={"key": secrets.token_hex(6), "blog": BLOG}).status_code
            for _ in range(LIMIT + 1)
        ]
        native = [
            http.get("/api/v1/comments/1", headers={"Authorization": f"Bearer bk_{secrets.token_urlsafe(32)}"})
            for _ in range(LIMIT + 1)
        ]
        # A real key keeps its own bucket: the guesser from the same address does not starve it.
        genuine = http.post("/1.1/verify-key", data={"key": real["akismet_key"], "blog": BLOG})
    assert made_up == [200] * LIMIT + [429]
    assert [r.status_code for r in native] == [401] * LIMIT + [429]
    assert native[-1].json()["error"]["code"] == "rate_limited"
    assert genuine.text == "valid"


def test_made_up_keys_do_not_escape_the_login_limit(limited_server: LiveServer) -> None:
    # The login limit used the same key function: a random "Authorization: Bearer ..." on each password guess gave
    # every guess a fresh bucket, so the per-client limit on login attempts never applied.
    with httpx.Client(base_url=limited_server.url) as http:
        token = re.search(r'name="csrf-token" content="([^"]+)"', http.get("/login").text)
        assert token is not None
        statuses = [
            http.post(
                "/login",
                data={"csrf_token": token.group(1), "email": "nobody@example.org", "password": f"guess {n}"},
                headers={"Authorization": f"Bearer {secrets.token_hex(8)}"},
            ).status_code
            for n in range(LIMIT + 1)
        ]
    assert statuses == [401] * LIMIT + [429]


def test_oversized_requests_count_against_the_limit(limited_server: LiveServer) -> None:
    """A 413 was raised before flask-limiter counted the request: a client sending only huge bodies was never
    limited. Now each counts in the bucket its key (header, query, Host) or address gives, and the next is a 429."""
    noisy = make_site(name="Huge bodies blog")
    api = {"Authorization": f"Bearer {noisy['api_key']}", "Content-Type": "application/json"}
    huge_json = b'{"content": "' + b"y" * 70_000 + b'"}'
    form = {"blog": BLOG, "user_ip": "203.0.113.9", "comment_content": "y" * 70_000}
    huge_form = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=limited_server.url, timeout=30) as http:
        native = [http.post("/api/v1/comments", content=huge_json, headers=api) for _ in range(LIMIT + 1)]
        same_key = http.post("/api/v1/comments?wait=0", json={"content": "small"}, headers=api)  # the key's bucket
        # The key in the query string picks the key's bucket; in the refused body it is not read: the address's.
        by_key = [
            http.post(f"/1.1/comment-check?api_key={noisy['akismet_key']}", content=urlencode(form), headers=huge_form)
            for _ in range(LIMIT + 1)
        ]
        in_body = urlencode({"api_key": noisy["akismet_key"], **form})
        by_address = [http.post("/1.1/submit-ham", content=in_body, headers=huge_form) for _ in range(LIMIT + 1)]
    assert [r.status_code for r in native] == [413] * LIMIT + [429]
    assert native[0].json()["error"]["code"] == "payload_too_large"
    assert native[-1].json()["error"]["code"] == "rate_limited" and int(native[-1].headers["Retry-After"]) > 0
    assert same_key.status_code == 429
    for answers in (by_key, by_address):
        assert [r.status_code for r in answers] == [200] * LIMIT + [429]
        assert answers[0].text == "invalid" and "larger than 65536 bytes" in answers[0].headers["X-akismet-debug-help"]
    limits = redis.Redis.from_url(settings().redis_url_for(LIMITS_DB))
    digest = hashlib.sha256(noisy["api_key"].encode()).hexdigest()[:32]
    assert list(limits.scan_iter(f"*key:{digest}*")), "counted in Redis, in the key's bucket"
    log = limited_server.log_path.read_text()
    assert "falling back to in-memory storage" not in log
    assert "could not tell the site" not in log  # the key function did not try the refused body's form


def _multipart(fields: list[tuple[str, str]]) -> bytes:
    parts = (f'--B\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields)
    return ("".join(parts) + "--B--\r\n").encode()


@pytest.mark.parametrize("shape", ["sized", "streamed", "too many parts"])
def test_an_oversized_request_is_refused_before_the_rate_limiter_reads_it(
    client: Any, site: dict[str, Any], caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    # The limiter's key function read the form first; Werkzeug's 413 there made flask-limiter take its Redis for
    # down ("falling back to in-memory storage"), so every limit of the process was counted in its own memory.
    fields = [("api_key", site["akismet_key"]), ("blog", BLOG), ("user_ip", "203.0.113.1")]
    kwargs: dict[str, Any]
    if shape == "too many parts":  # under 64 KiB, but past Werkzeug's 1000 parts
        kwargs = {
            "data": _multipart([*fields] + [("x", "1")] * 1000),
            "content_type": "multipart/form-data; boundary=B",
        }
        expected = "more than 1000 parts"
    else:
        body = urlencode([*fields, ("comment_content", "y" * 70_000)]).encode()
        kwargs = {"data": body, "content_type": "application/x-www-form-urlencoded"}
        expected = "larger than 65536 bytes"
    if shape == "streamed":
        kwargs = {
            "input_stream": io.BytesIO(kwargs.pop("data")),
            "headers": {"Transfer-Encoding": "chunked"},
            "environ_overrides": {"wsgi.input_terminated": True},
            **kwargs,
        }
    with caplog.at_level(logging.DEBUG, logger="flask-limiter"):
        response = client.post("/1.1/comment-check", **kwargs)
    assert response.get_data(as_text=True) == "invalid"
    assert expected in response.headers["X-akismet-debug-help"]
    assert [r.getMessage() for r in caplog.records if r.name == "flask-limiter"] == []


def test_an_oversized_native_request_is_413_before_anything_else(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Not even authentication: the size is the first thing looked at (the rate limiter counts it, reading no body).
    with caplog.at_level(logging.DEBUG, logger="flask-limiter"):
        response = client.post("/api/v1/comments", data=b"x" * 70_000, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert [r.getMessage() for r in caplog.records if r.name == "flask-limiter"] == []


def test_an_oversized_form_is_413_before_the_csrf_check(client: Any) -> None:
    # CSRF read the form first: a streamed body was cut at the limit and answered "The CSRF token is missing" (400).
    body = b"email=a%40example.org&password=x&pad=" + b"x" * 70_000
    response = client.post(
        "/login",
        input_stream=io.BytesIO(body),
        content_type="application/x-www-form-urlencoded",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413


DATABASE_DOWN_PROBE = """
import json, logging, sys
from service.app import create_app
from service.extensions import limiter

fallbacks = []
handler = logging.Handler()
handler.emit = lambda record: fallbacks.append(record.getMessage())
logging.getLogger("flask-limiter").addHandler(handler)
http = create_app({"TESTING": True, "PROPAGATE_EXCEPTIONS": False}).test_client()
ip = {"REMOTE_ADDR": sys.argv[1]}
statuses = [
    http.post("/1.1/verify-key", data={"key": f"{n:012d}", "blog": "https://b.example"}, environ_base=ip).status_code
    for n in range(3)
] + [
    http.get("/api/v1/comments/1", headers={"Authorization": f"Bearer bk_{n}"}, environ_base=ip).status_code
    for n in range(3)
]
print(json.dumps({"statuses": statuses, "fallbacks": fallbacks}))
"""


def test_a_database_error_in_the_rate_key_keeps_the_limits_in_redis(bouncer_env: dict[str, str]) -> None:
    # Looking up a key's site raised into flask-limiter, which took that for its Redis being down and counted every
    # limit of the process in the process's own memory from then on. Now such a request counts per client IP.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    env |= {"BOUNCER_DATABASE_URL": "postgresql://bouncer@127.0.0.1:1/bouncer", "BOUNCER_API_RATE_LIMIT": "2/minute"}
    ip = f"198.51.100.{secrets.randbelow(250) + 1}"
    probe = subprocess.run(
        [sys.executable, "-c", DATABASE_DOWN_PROBE, ip], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout.strip().splitlines()[-1])
    assert answer["fallbacks"] == []
    assert "limiting per client IP" in probe.stderr
    # Still limited, per client IP, and counted in Redis (the answers themselves are 503: the database is down).
    assert answer["statuses"] == [503, 503, 429] * 2
    limits = redis.Redis.from_url(settings().redis_url_for(LIMITS_DB))
    assert len(list(limits.scan_iter(f"*ip:{ip}*"))) == 2  # one bucket per endpoint
