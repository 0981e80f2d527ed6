"""UI fixtures: a site, users, a headless Chromium (Debian's /usr/bin/chromium) and signed-in browser sessions.

Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.ui.helpers import CHROMIUM, CHROMIUM_ARGS, BrowserSession, make_ui_site, make_user

# Many logins from 127.0.0.1 in one run: the per-IP login rate limit is not what these tests are about.
os.environ.setdefault("BOUNCER_LOGIN_RATE_LIMIT", "10000/minute")


@pytest.fixture
def ui_site(bouncer_env: dict[str, str]) -> dict[str, Any]:
    return make_ui_site()


@pytest.fixture
def moderator(ui_site: dict[str, Any]) -> dict[str, Any]:
    return make_user("moderator", (ui_site["id"],))


@pytest.fixture
def admin(bouncer_env: dict[str, str]) -> dict[str, Any]:
    return make_user("admin")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def browser_session(browser: Any, live_server: Any) -> Iterator[Callable[[], BrowserSession]]:
    """A factory of independent browser sessions (separate cookies) against the live server."""
    made: list[BrowserSession] = []

    def make() -> BrowserSession:
        s = BrowserSession(browser, live_server.url)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
