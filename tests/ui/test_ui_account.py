"""The account page: a signed-in user changes their own password and sees and ends their own sessions.

Through Flask's test client (each client a browser of its own); every user is fresh, since failed logins lock an
address and the test database is shared by all tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.ui.helpers import PASSWORD, BrowserSession, csrf_from, login, make_user

NEW_PASSWORD = "a new password of mine 42"


def _sent_to_login(client: Any) -> bool:
    response = client.get("/moderation/")
    return response.status_code == 302 and "/login" in response.headers["Location"]


def _login_status(app: Any, email: str, password: str) -> int:
    """The status of a fresh browser's sign-in: 302 signed in, 401 refused."""
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return int(client.post("/login", data={"email": email, "password": password, "csrf_token": token}).status_code)


def _change(client: Any, token: str, current: str, new: str, repeat: str | None = None, **kw: Any) -> Any:
    data = {"current_password": current, "new_password": new, "repeat_password": new if repeat is None else repeat}
    if token:
        data["csrf_token"] = token
    return client.post("/account/password", data=data, **kw)


def _session_rows(client: Any) -> int:
    """How many sessions the account page lists."""
    return len(re.findall(r"<tr[^>]*>\s*<td>", client.get("/account").get_data(as_text=True)))


def _failed_logins(user_id: int) -> tuple[int, Any]:
    from service.db import session_scope
    from service.models import User

    with session_scope() as db:
        user = db.get(User, user_id)
        assert user is not None
        return user.failed_logins, user.locked_until


@pytest.fixture
def user(bouncer_env: dict[str, str]) -> dict[str, Any]:
    return make_user("moderator")


def test_signed_out_is_sent_to_login(client: Any) -> None:
    response = client.get("/account")
    assert response.status_code == 302 and "/login?next=/account" in response.headers["Location"]
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = _change(client, token, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    response = client.post("/account/sessions/end-others", data={"csrf_token": token})
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("role", ["moderator", "admin"])
def test_the_page_is_linked_from_every_header(client: Any, role: str) -> None:
    login(client, make_user(role))
    for path in ["/moderation/", "/moderation/all"] + (["/admin/users"] if role == "admin" else []):
        html = client.get(path).get_data(as_text=True)
        assert re.search(r'<header class="topbar">.*href="/account"', html, re.S), path
    page = client.get("/account")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Account</h1>" in html and 'href="/account" aria-current="page"' in html
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert re.search(r'id="password-form">\s*<input type="hidden" name="csrf_token"', html)
    assert "This is your only session." in html and "Sign out everywhere else" not in html


def test_changing_the_password_signs_out_the_other_sessions_only(app: Any, user: dict[str, Any]) -> None:
    here, elsewhere = app.test_client(), app.test_client()
    token = login(here, user)
    login(elsewhere, user)
    response = _change(here, token, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    page = here.get("/account")
    assert page.status_code == 200 and b"Password changed." in page.data
    assert here.get("/moderation/").status_code == 200  # this browser stays signed in
    assert _sent_to_login(elsewhere)  # the other is signed out
    assert _login_status(app, user["email"], PASSWORD) == 401  # the old password no longer signs in
    assert _login_status(app, user["email"], NEW_PASSWORD) == 302  # the new one does
    login(elsewhere, {**user, "password": NEW_PASSWORD})
    assert elsewhere.get("/moderation/").status_code == 200


def test_a_wrong_current_password_is_refused_and_counts_towards_the_lockout(app: Any, user: dict[str, Any]) -> None:
    from service.auth.lockout import MAX_FAILED_LOGINS

    client = app.test_client()
    token = login(client, user)
    for i in range(MAX_FAILED_LOGINS - 1):
        response = _change(client, token, f"wrong guess {i}", NEW_PASSWORD)
        assert response.status_code == 403 and b"The current password is wrong." in response.data
        assert _failed_logins(user["id"])[0] == i + 1
    # The same count as the login form's: one wrong password there locks the account now.
    assert _login_status(app, user["email"], "wrong at the login") == 401
    failed, locked_until = _failed_logins(user["id"])
    assert failed == MAX_FAILED_LOGINS and locked_until is not None
    # While locked even the right current password is refused, here and at the login.
    response = _change(client, token, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 403 and b"locked" in response.data
    assert _login_status(app, user["email"], PASSWORD) == 401
    assert client.get("/moderation/").status_code == 200  # the lock stops sign-ins and changes, not this session


def test_wrong_current_passwords_on_the_page_alone_lock_the_account(app: Any, user: dict[str, Any]) -> None:
    from service.auth.lockout import MAX_FAILED_LOGINS

    client = app.test_client()
    token = login(client, user)
    for i in range(MAX_FAILED_LOGINS):
        response = _change(client, token, f"wrong guess {i}", NEW_PASSWORD)
        assert response.status_code == 403
    assert b"locked" in response.data
    response = _change(client, token, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 403 and b"locked" in response.data
    assert _login_status(app, user["email"], PASSWORD) == 401 and _login_status(app, user["email"], NEW_PASSWORD) == 401


def test_the_right_current_password_clears_earlier_failures(app: Any, user: dict[str, Any]) -> None:
    client = app.test_client()
    token = login(client, user)
    assert _change(client, token, "wrong guess", NEW_PASSWORD).status_code == 403
    assert _failed_logins(user["id"])[0] == 1
    assert _change(client, token, PASSWORD, NEW_PASSWORD).status_code == 302
    assert _failed_logins(user["id"]) == (0, None)


@pytest.mark.parametrize(
    ("new", "repeat", "message"),
    [
        ("short 123", "short 123", b"The new password must have at least 10 characters."),
        (NEW_PASSWORD, NEW_PASSWORD + "!", b"The new password and its repetition differ."),
        (PASSWORD, PASSWORD, b"The new password must differ from the current one."),
    ],
    ids=["too-short", "repeat-differs", "same-as-current"],
)
def test_a_new_password_that_will_not_do_is_refused(
    app: Any, user: dict[str, Any], new: str, repeat: str, message: bytes
) -> None:
    here, elsewhere = app.test_client(), app.test_client()
    token = login(here, user)
    login(elsewhere, user)
    response = _change(here, token, PASSWORD, new, repeat)
    assert response.status_code == 400 and message in response.data
    assert elsewhere.get("/moderation/").status_code == 200  # nothing changed: no session ended
    assert _login_status(app, user["email"], PASSWORD) == 302
    assert _failed_logins(user["id"]) == (0, None)


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_the_forms_need_csrf(app: Any, user: dict[str, Any], token: str | None) -> None:
    here, elsewhere = app.test_client(), app.test_client()
    login(here, user)
    login(elsewhere, user)
    assert _change(here, token or "", PASSWORD, NEW_PASSWORD).status_code == 400
    data = {"csrf_token": token} if token else {}
    assert here.post("/account/sessions/end-others", data=data).status_code == 400
    assert _login_status(app, user["email"], PASSWORD) == 302
    assert elsewhere.get("/moderation/").status_code == 200


def test_sessions_are_listed_and_the_others_can_be_signed_out(app: Any, user: dict[str, Any]) -> None:
    here, elsewhere, someone_else = app.test_client(), app.test_client(), app.test_client()
    token = login(here, user)
    login(elsewhere, user)
    login(someone_else, make_user("moderator"))
    html = here.get("/account").get_data(as_text=True)
    assert len(re.findall(r"<tr[^>]*>\s*<td>", html)) == 2, html  # both of this user's sessions, nobody else's
    assert html.count("this session") == 1 and 'data-role="this-session"' in html
    assert "Sign out everywhere else" in html
    response = here.post("/account/sessions/end-others", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert _sent_to_login(elsewhere)
    assert someone_else.get("/moderation/").status_code == 200
    html = here.get("/account").get_data(as_text=True)
    assert "Every other session of yours has been signed out." in html
    assert len(re.findall(r"<tr[^>]*>\s*<td>", html)) == 1 and "this session" in html
    assert "Sign out everywhere else" not in html and "This is your only session." in html


def test_an_admins_reset_of_a_users_password_still_works(app: Any, user: dict[str, Any]) -> None:
    """The admin's reset and the user's own change share set_password: the user's sessions all end."""
    theirs, admins = app.test_client(), app.test_client()
    login(theirs, user)
    token = login(admins, make_user("admin"))
    response = admins.post(f"/admin/users/{user['id']}/password", data={"password": NEW_PASSWORD, "csrf_token": token})
    assert response.status_code == 200 and b"New password set" in response.data
    assert _sent_to_login(theirs)
    assert admins.get("/admin/users").status_code == 200
    assert _login_status(app, user["email"], PASSWORD) == 401
    login(theirs, {**user, "password": NEW_PASSWORD})
    assert _session_rows(theirs) == 1  # the new sign-in only: the reset ended the one before


def test_an_admins_own_reset_keeps_this_session(app: Any) -> None:
    admin = make_user("admin")
    here, elsewhere = app.test_client(), app.test_client()
    token = login(here, admin)
    login(elsewhere, admin)
    response = here.post(f"/admin/users/{admin['id']}/password", data={"password": NEW_PASSWORD, "csrf_token": token})
    assert response.status_code == 200
    assert here.get("/admin/users").status_code == 200
    assert _sent_to_login(elsewhere)
    assert _session_rows(here) == 1  # this one, still listed; the other ended
    assert _login_status(app, admin["email"], NEW_PASSWORD) == 302


def test_the_password_change_is_rate_limited_per_client(
    client: Any, user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login's per-client limit applies to the change too (a bucket of its own), so a stolen session cannot
    guess fast, even across accounts."""
    from service.config import settings

    token = login(client, user)
    monkeypatch.setenv("BOUNCER_LOGIN_RATE_LIMIT", "3/minute")
    settings.cache_clear()
    try:
        client_ip = "203.0.113.77"  # an address no other test sends from
        statuses = [
            _change(client, token, PASSWORD, "short", environ_base={"REMOTE_ADDR": client_ip}).status_code
            for _ in range(4)
        ]
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert statuses == [400] * 3 + [429]


@pytest.mark.browser
def test_a_password_changed_in_the_browser_signs_in(browser_session: Callable[[], BrowserSession]) -> None:
    user = make_user("moderator")
    s = browser_session()
    s.login(user)
    page = s.page
    with page.expect_navigation():
        page.click('header a[href="/account"]')
    page.wait_for_url(re.compile(r".*/account$"))
    assert page.get_by_role("heading", name="Account").is_visible()
    assert page.locator("[data-role=this-session]").count() == 1
    page.fill('input[name="current_password"]', PASSWORD)
    page.fill('input[name="new_password"]', NEW_PASSWORD)
    page.fill('input[name="repeat_password"]', NEW_PASSWORD)
    with page.expect_navigation():
        page.click('#password-form button[type="submit"]')
    page.wait_for_url(re.compile(r".*/account$"))
    assert page.locator(".flash-success").filter(has_text="Password changed.").is_visible()
    with page.expect_navigation():
        page.click('header button:has-text("Sign out")')
    page.wait_for_url(re.compile(r".*/login$"))
    s.login({**user, "password": NEW_PASSWORD})
    assert page.locator('header a[href="/account"]').is_visible()
    assert s.dialogs == [] and s.errors == []
