"""Shared by the Akismet client tests: the PyPI client pointed at a Bouncer under test."""

from __future__ import annotations

import akismet
import httpx

BLOG = "https://blog.example"
IP = "198.51.100.23"


class ToBouncer(httpx.BaseTransport):
    """Sends the client's requests for https://rest.akismet.com to the Bouncer under test (its URL is fixed)."""

    def __init__(self, base_url: str) -> None:
        self.base = httpx.URL(base_url)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme=self.base.scheme, host=self.base.host, port=self.base.port)
        request.headers["Host"] = self.base.netloc.decode("ascii")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def bouncer_http(base_url: str) -> httpx.Client:
    """An httpx client as the PyPI client makes its own (user agent, 1 s timeout), sending to Bouncer."""
    return httpx.Client(
        transport=ToBouncer(base_url),
        headers={"User-Agent": akismet.USER_AGENT},
        timeout=1.0,  # the client's own default: answers must come within it
    )


def python_client(http: httpx.Client, key: str) -> akismet.SyncClient:
    return akismet.SyncClient(config=akismet.Config(key=key, url=BLOG), http_client=http)
