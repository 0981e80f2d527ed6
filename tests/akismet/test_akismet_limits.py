"""Rate limiting on the Akismet API: per key, 429 with Retry-After, and Akismet clients see an error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import akismet
import httpx
import pytest

from tests.akismet.harness import BLOG, bouncer_http, python_client
from tests.conftest import LiveServer, make_site

LIMIT = 5


@pytest.fixture(scope="module")
def limited_server(bouncer_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A second gunicorn with a tiny limit (the limit is read at start-up)."""
    env = {**bouncer_env, "BOUNCER_API_RATE_LIMIT": f"{LIMIT}/minute"}
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
