"""The UI through Flask's test client: sign-in, access rules, CSRF, actions, races, undo, admin pages."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.ui.helpers import (
    PASSWORD,
    add_comment,
    comment_state,
    csrf_from,
    current_labels,
    events_of,
    login,
    make_ui_site,
    make_user,
    unique,
)


def act(client: Any, token: str, comment_id: int, action: str, seen: str = "hold", **extra: Any) -> Any:
    return client.post(
        "/moderation/act",
        data={"one": f"{comment_id}:{action}", f"seen_{comment_id}": seen, "csrf_token": token, **extra},
        headers={"Accept": "application/json"},
    )


# --- sign-in -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/moderation/", "/moderation/all", "/moderation/comments/1", "/admin/sites"])
def test_logged_out_user_is_sent_to_login(client: Any, path: str) -> None:
    response = client.get(path, follow_redirects=True)
    assert response.request.path == "/login"
    assert b"Sign in" in response.data


def test_login_logout_and_next(client: Any, moderator: dict[str, Any]) -> None:
    response = client.get("/moderation/all?status=reject")
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "email": moderator["email"],
            "password": PASSWORD,
            "csrf_token": token,
            "next": "/moderation/all?status=reject",
        },
    )
    assert response.headers["Location"] == "/moderation/all?status=reject"
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    page = client.get("/moderation/")
    assert page.status_code == 200 and moderator["email"].encode() in page.data
    assert client.post("/logout", data={"csrf_token": csrf_from(page.get_data(as_text=True))}).status_code == 302
    assert client.get("/moderation/").status_code == 302


def test_a_signed_out_session_cookie_is_dead(app: Any, moderator: dict[str, Any]) -> None:
    """Signing out ends the session on the server: a copy of the cookie taken before (another tab's, a stolen one)
    no longer signs anybody in; a second session of the same user lives on."""
    this, other, thief = app.test_client(), app.test_client(), app.test_client()
    token = login(this, moderator)
    login(other, moderator)
    stolen = this.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert stolen is not None
    with this.session_transaction() as before:
        signed_in_as = dict(before)
    assert this.post("/logout", data={"csrf_token": token}).status_code == 302
    assert this.get("/moderation/").status_code == 302
    thief.set_cookie(app.config["SESSION_COOKIE_NAME"], stolen.value)
    assert thief.get("/moderation/").status_code == 302
    assert thief.get("/moderation/", headers={"Accept": "application/json"}).status_code == 401
    # Nor a cookie signed anew with the old session's values.
    forged = app.test_client()
    with forged.session_transaction() as values:
        values.update(signed_in_as)
    assert forged.get("/moderation/").status_code == 302
    assert other.get("/moderation/").status_code == 200


def test_a_session_ends_by_itself_after_its_lifetime(client: Any, moderator: dict[str, Any]) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from service.auth.session import SESSION_LIFETIME
    from service.db import session_scope
    from service.models import UserSession

    login(client, moderator)
    assert client.get("/moderation/").status_code == 200
    signed_in = datetime.now(UTC) - SESSION_LIFETIME - timedelta(minutes=1)
    with session_scope() as db:
        db.execute(update(UserSession).where(UserSession.user_id == moderator["id"]).values(created_at=signed_in))
    response = client.get("/moderation/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_open_redirect_after_login_is_refused(client: Any, moderator: dict[str, Any]) -> None:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={"email": moderator["email"], "password": PASSWORD, "csrf_token": token, "next": "//evil.example/"},
    )
    assert response.headers["Location"] == "/moderation/"


# Browsers (and urllib, which Werkzeug's redirect runs the Location through) drop tabs and newlines from a URL, so
# "/<tab>/evil.example" arrives as "//evil.example": another host. None of these may leave the site.
OFF_SITE_NEXT = [
    "/\t/evil.example/",
    "/\n/evil.example/",
    "/\r\n/evil.example/",
    "\t//evil.example/",
    "/\\evil.example/",
]


@pytest.mark.parametrize("target", OFF_SITE_NEXT)
def test_next_with_control_characters_does_not_leave_the_site(
    client: Any, moderator: dict[str, Any], target: str
) -> None:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"email": moderator["email"], "password": PASSWORD, "csrf_token": token, "next": target}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/moderation/"
    # Already signed in: a link to /login?next=... redirects at once, so it must be checked just as well.
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 302 and response.headers["Location"] == "/moderation/"
    # And the moderation forms' "next" (where an action returns to).
    token = csrf_from(client.get("/moderation/").get_data(as_text=True))
    response = client.post("/moderation/act", data={"action": "approve", "csrf_token": token, "next": target})
    assert response.status_code == 302 and response.headers["Location"] == "/moderation/"


# Addresses no other test sends from: each rate-limit case takes the next one.
_OWN_CLIENT_IPS = iter(f"198.51.100.{n}" for n in range(1, 255))


@pytest.fixture
def login_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A low per-client login rate limit for one test (the UI tests otherwise run with a very high one)."""
    from service.config import settings

    monkeypatch.setenv("BOUNCER_LOGIN_RATE_LIMIT", "3/minute")
    settings.cache_clear()
    yield 3
    monkeypatch.undo()
    settings.cache_clear()


@pytest.mark.parametrize(
    "headers",
    [
        lambda i: {},
        lambda i: {"Authorization": f"Bearer guess-{i}"},  # the API's per-key bucket must not apply to /login
    ],
    ids=["plain", "varying-authorization"],
)
def test_login_rate_limit_is_per_client(
    client: Any, moderator: dict[str, Any], login_limit: int, headers: Callable[[int], dict[str, str]]
) -> None:
    client_ip = next(_OWN_CLIENT_IPS)  # a bucket of this case's own (a random one could be the other case's)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    statuses = [
        client.post(
            "/login",
            data={"email": moderator["email"], "password": f"wrong {i}", "csrf_token": token},
            headers=headers(i),
            environ_base={"REMOTE_ADDR": client_ip},
        ).status_code
        for i in range(login_limit + 1)
    ]
    assert statuses == [401] * login_limit + [429]


def test_failed_logins_lock_the_account(client: Any, moderator: dict[str, Any]) -> None:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    for _ in range(5):
        response = client.post("/login", data={"email": moderator["email"], "password": "wrong", "csrf_token": token})
        assert response.status_code == 401
    assert b"locked" in response.data
    # Even the right password is refused while locked.
    response = client.post("/login", data={"email": moderator["email"], "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 401 and b"locked" in response.data
    unknown = client.post("/login", data={"email": "nobody@example.test", "password": "x", "csrf_token": token})
    assert unknown.status_code == 401 and b"Wrong e-mail or password" in unknown.data


def test_the_right_password_does_not_sign_in_past_a_lock_set_while_it_was_checked(
    client: Any, moderator: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong guess sent at the same moment as the right password locks the account after the login read it
    unlocked: the right password is then refused as locked, not signed in on the lock state it read first."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from service.auth import views
    from service.db import session_scope
    from service.models import User

    locked_until = datetime.now(UTC) + views.LOCKOUT

    def matches_while_a_guess_locks(user: Any, password: str) -> bool:
        with session_scope() as db:  # the concurrent request: its own transaction, committed here
            db.execute(
                update(User)
                .where(User.id == user.id)
                .values(failed_logins=views.MAX_FAILED_LOGINS, locked_until=locked_until)
            )
        return bool(real(user, password))

    real = views.password_matches
    monkeypatch.setattr(views, "password_matches", matches_while_a_guess_locks)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"email": moderator["email"], "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 401 and b"locked" in response.data
    failed, still_locked = _failed_logins(moderator["id"])
    assert failed == views.MAX_FAILED_LOGINS and still_locked is not None
    assert client.get("/moderation/").status_code == 302  # no session was started


def _failed_logins(user_id: int) -> tuple[int, Any]:
    from service.db import session_scope
    from service.models import User

    with session_scope() as db:
        user = db.get(User, user_id)
        assert user is not None
        return user.failed_logins, user.locked_until


@pytest.mark.parametrize("extra", [-1, 0])
def test_wrong_passwords_sent_at_once_are_all_counted(app: Any, moderator: dict[str, Any], extra: int) -> None:
    """Wrong passwords sent at the same moment from several browsers each count (a read-modify-write of the counter
    lost some, so a burst of guesses never locked the account); the one that reaches the limit locks it."""
    from service.auth.lockout import MAX_FAILED_LOGINS

    attempts = MAX_FAILED_LOGINS + extra
    clients = [app.test_client() for _ in range(attempts)]
    tokens = [csrf_from(c.get("/login").get_data(as_text=True)) for c in clients]
    start = threading.Barrier(attempts)

    def guess(i: int) -> int:
        start.wait()
        data = {"email": moderator["email"], "password": f"wrong {i}", "csrf_token": tokens[i]}
        return int(clients[i].post("/login", data=data).status_code)

    with ThreadPoolExecutor(attempts) as pool:
        assert list(pool.map(guess, range(attempts))) == [401] * attempts
    failed, locked_until = _failed_logins(moderator["id"])
    assert failed == attempts
    right = {"email": moderator["email"], "password": PASSWORD, "csrf_token": tokens[0]}
    response = clients[0].post("/login", data=right)
    if attempts >= MAX_FAILED_LOGINS:
        assert locked_until is not None
        assert response.status_code == 401 and b"locked" in response.data
    else:
        assert locked_until is None
        assert response.status_code == 302
        assert _failed_logins(moderator["id"]) == (0, None)


def test_failed_login_count_is_one_update_under_contention(bouncer_env: dict[str, str]) -> None:
    """count_failed_login from many threads at once: every call counts, the lock is set at the limit and a guess
    made while locked does not move it."""
    from datetime import UTC, datetime

    from service.auth.lockout import LOCKOUT, MAX_FAILED_LOGINS, count_failed_login
    from service.db import session_scope

    user = make_user("moderator")
    attempts = 4 * MAX_FAILED_LOGINS
    start = threading.Barrier(attempts)
    now = datetime.now(UTC)

    def guess(_: int) -> bool:
        start.wait()
        with session_scope() as db:
            return count_failed_login(db, user["id"], now)

    with ThreadPoolExecutor(attempts) as pool:
        locked = list(pool.map(guess, range(attempts)))
    assert locked.count(False) == MAX_FAILED_LOGINS - 1  # the calls before the limit; every later one sees the lock
    failed, locked_until = _failed_logins(user["id"])
    assert failed == attempts
    assert locked_until is not None
    assert abs((locked_until.replace(tzinfo=UTC) - (now + LOCKOUT)).total_seconds()) < 1


def test_a_lockout_that_ran_out_starts_a_new_count(client: Any, moderator: dict[str, Any]) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from service.auth.lockout import MAX_FAILED_LOGINS
    from service.db import session_scope
    from service.models import User

    with session_scope() as db:
        db.execute(
            update(User)
            .where(User.id == moderator["id"])
            .values(failed_logins=MAX_FAILED_LOGINS, locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    token = csrf_from(client.get("/login").get_data(as_text=True))
    wrong = client.post("/login", data={"email": moderator["email"], "password": "wrong", "csrf_token": token})
    assert wrong.status_code == 401 and b"Wrong e-mail or password" in wrong.data
    assert _failed_logins(moderator["id"]) == (1, None)
    login(client, moderator)
    assert _failed_logins(moderator["id"]) == (0, None)


def test_the_lockout_does_not_tell_which_emails_have_an_account(client: Any, moderator: dict[str, Any]) -> None:
    """Six wrong passwords for a moderator's e-mail and for an e-mail nobody has: the same answers, so that the
    lockout message cannot be used to find out who has an account."""
    token = csrf_from(client.get("/login").get_data(as_text=True))

    def answers(email: str) -> list[tuple[int, str]]:
        seen = []
        for i in range(6):
            r = client.post("/login", data={"email": email, "password": f"wrong {i}", "csrf_token": token})
            alert = re.search(r'role="alert">([^<]*)<', r.get_data(as_text=True))
            seen.append((r.status_code, alert.group(1) if alert else ""))
        return seen

    known = answers(moderator["email"])
    assert known[-1] == (401, "Too many failed attempts. This account is locked for a few minutes.")
    assert answers(f"nobody-{secrets.token_hex(5)}@example.test") == known


def test_changed_password_ends_sessions(client: Any, moderator: dict[str, Any]) -> None:
    from werkzeug.security import generate_password_hash

    from service.db import session_scope
    from service.models import User

    login(client, moderator)
    with session_scope() as db:
        user = db.get(User, moderator["id"])
        assert user is not None
        user.password_hash = generate_password_hash("another password 123")
    assert client.get("/moderation/").status_code == 302


def _sent_to_login(client: Any) -> bool:
    response = client.get("/moderation/")
    json = client.get("/moderation/", headers={"Accept": "application/json"})
    return response.status_code == 302 and "/login" in response.headers["Location"] and json.status_code == 401


def test_deactivating_a_user_ends_their_sessions(app: Any, admin: dict[str, Any], moderator: dict[str, Any]) -> None:
    """The moderator's browsers are signed out at their next request, and stay so when the user is reactivated
    (a browser that made no request meanwhile still holds its cookie: the session row itself must have ended)."""
    theirs, idle_tab, admins = app.test_client(), app.test_client(), app.test_client()
    login(theirs, moderator)
    login(idle_tab, moderator)
    token = login(admins, admin)
    assert theirs.get("/moderation/").status_code == 200
    response = admins.post(f"/admin/users/{moderator['id']}", data={"role": "moderator", "csrf_token": token})
    assert response.status_code == 302
    assert _sent_to_login(theirs)
    assert admins.get("/admin/users").status_code == 200  # the admin who did it stays signed in
    admins.post(f"/admin/users/{moderator['id']}", data={"role": "moderator", "active": "on", "csrf_token": token})
    assert _sent_to_login(idle_tab)
    login(theirs, moderator)  # a new sign-in works again
    assert theirs.get("/moderation/").status_code == 200


def test_an_admins_password_reset_ends_the_users_sessions(
    app: Any, admin: dict[str, Any], moderator: dict[str, Any]
) -> None:
    theirs, admins = app.test_client(), app.test_client()
    login(theirs, moderator)
    token = login(admins, admin)
    new_password = "a brand new password 42"
    response = admins.post(
        f"/admin/users/{moderator['id']}/password", data={"password": new_password, "csrf_token": token}
    )
    assert response.status_code == 200 and b"New password set" in response.data
    assert _sent_to_login(theirs)
    assert admins.get("/admin/users").status_code == 200
    login(theirs, {**moderator, "password": new_password})
    assert theirs.get("/moderation/").status_code == 200


def test_an_admin_setting_their_own_password_stays_signed_in_here_only(app: Any, admin: dict[str, Any]) -> None:
    here, elsewhere = app.test_client(), app.test_client()
    token = login(here, admin)
    login(elsewhere, admin)
    new_password = "my own new password 42"
    response = here.post(f"/admin/users/{admin['id']}/password", data={"password": new_password, "csrf_token": token})
    assert response.status_code == 200
    assert here.get("/admin/users").status_code == 200
    assert here.get("/moderation/").status_code == 200
    assert _sent_to_login(elsewhere)
    login(elsewhere, {**admin, "password": new_password})
    assert elsewhere.get("/moderation/").status_code == 200


# --- security ------------------------------------------------------------------------------------------------


def test_security_headers(client: Any, moderator: dict[str, Any]) -> None:
    login(client, moderator)
    response = client.get("/moderation/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"


def _our_error_page(response: Any, status: int) -> str:
    """The body of ``response`` after checking it is the UI's own error page (layout, headers) for ``status``."""
    assert response.status_code == status
    assert response.content_type == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert '<header class="topbar">' in html and f"<h1>{status}</h1>" in html, html  # error.html, not Werkzeug's
    return html


@pytest.mark.parametrize("signed_in", [False, True], ids=["signed-out", "signed-in"])
def test_ui_errors_are_our_own_page(client: Any, moderator: dict[str, Any], signed_in: bool) -> None:
    """A 404 or 405 in the UI was Werkzeug's bare page; it is error.html with the status, the security headers and
    nothing of the request's path."""
    if signed_in:
        login(client, moderator)
    missing = _our_error_page(client.get("/moderation/nope/<script>alert(1)</script>?q=<img src=x>"), 404)
    assert "There is no page at this address." in missing
    assert "<script>alert" not in missing and "<img src=x" not in missing and "nope" not in missing
    not_allowed = client.delete("/login")
    html = _our_error_page(not_allowed, 405)
    assert "This page cannot be used that way." in html
    assert set(not_allowed.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "<h1>404</h1>" in _our_error_page(client.get("/static/no-such-file.css"), 404)


def test_ui_413_and_429_are_our_own_page(client: Any, login_limit: int) -> None:
    from service.config import settings

    too_large = client.post("/login", data={"email": "x" * (settings().max_body_bytes + 1)})
    assert "What was sent is too large." in _our_error_page(too_large, 413)
    client_ip = next(_OWN_CLIENT_IPS)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    for _ in range(login_limit + 1):
        answer = client.post(
            "/login",
            data={"email": "nobody@example.org", "password": "x", "csrf_token": token},
            environ_base={"REMOTE_ADDR": client_ip},
        )
    assert "Too many requests." in _our_error_page(answer, 429)
    assert int(answer.headers["Retry-After"]) > 0


def test_api_errors_stay_json(client: Any) -> None:
    """Only the UI gets the page: the machine APIs keep their JSON error shape, status and headers."""
    missing = client.get("/api/v1/no-such-endpoint")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    not_allowed = client.delete("/api/v1/comments")
    assert not_allowed.status_code == 405 and not_allowed.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in not_allowed.headers["Allow"]
    akismet = client.get("/1.1/no-such-endpoint")
    assert akismet.status_code == 404 and akismet.content_type == "application/json"


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_post_without_valid_csrf_is_refused(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any], token: str | None
) -> None:
    login(client, moderator)
    cid = add_comment(ui_site["id"])
    data = {"one": f"{cid}:approve", f"seen_{cid}": "hold"}
    if token:
        data["csrf_token"] = token
    response = client.post("/moderation/act", data=data)
    assert response.status_code == 400
    assert comment_state(cid) == ("hold", "spam")
    assert events_of(cid) == []


def test_login_post_needs_csrf(client: Any, moderator: dict[str, Any]) -> None:
    response = client.post("/login", data={"email": moderator["email"], "password": PASSWORD})
    assert response.status_code == 400


def test_moderator_cannot_see_or_act_on_another_sites_comment(client: Any, moderator: dict[str, Any]) -> None:
    other = make_ui_site()
    cid = add_comment(other["id"], content="on the other blog")
    token = login(client, moderator)
    assert client.get(f"/moderation/comments/{cid}").status_code == 403
    assert act(client, token, cid, "approve").status_code == 403
    form = client.post("/moderation/act", data={"one": f"{cid}:spam", f"seen_{cid}": "hold", "csrf_token": token})
    assert form.status_code == 403
    assert comment_state(cid) == ("hold", "spam") and events_of(cid) == []
    assert b"on the other blog" not in client.get("/moderation/").data
    assert b"on the other blog" not in client.get("/moderation/all").data
    assert client.get("/admin/sites").status_code == 403


def test_admin_sees_every_site(client: Any, admin: dict[str, Any]) -> None:
    other = make_ui_site()
    cid = add_comment(other["id"], content="visible to admins")
    login(client, admin)
    assert b"visible to admins" in client.get("/moderation/").data
    assert client.get(f"/moderation/comments/{cid}").status_code == 200


# --- ids sent by users ---------------------------------------------------------------------------------------

# Values that are no row id: Unicode digits (Werkzeug's <int:> and int() read them), past the 64-bit id column (a
# DataError on PostgreSQL), zero, signed, padded with spaces.
NOT_IDS = ["\u0661\u0662", "\uff11", "\u00b2", "9" * 30, str(2**63), "0", "-1", "+1", " 1"]


def _arabic_indic(n: int) -> str:
    return "".join(chr(0x0660 + int(d)) for d in str(n))


@pytest.mark.parametrize("bad", ["9" * 30, str(2**63), "0", "00"])
def test_an_id_in_a_url_that_cannot_be_one_is_a_404(client: Any, admin: dict[str, Any], bad: str) -> None:
    login(client, admin)
    for path in (
        f"/moderation/comments/{bad}",
        f"/admin/sites/{bad}",
        f"/admin/users/{bad}",
        f"/admin/retraining/runs/{bad}",
    ):
        assert client.get(path).status_code == 404, path


def test_unicode_digits_in_a_url_name_no_comment(client: Any, admin: dict[str, Any], ui_site: dict[str, Any]) -> None:
    """Werkzeug's <int:> matched any Unicode digit and int() read '١٢' as 12: the URL served comment 12."""
    cid = add_comment(ui_site["id"], content="reachable by ASCII digits only")
    login(client, admin)
    assert client.get(f"/moderation/comments/{cid}").status_code == 200
    for spelled in (_arabic_indic(cid), "".join(chr(0xFF10 + int(d)) for d in str(cid))):
        response = client.get(f"/moderation/comments/{spelled}")
        assert response.status_code == 404 and b"reachable by ASCII digits only" not in response.data
    assert client.get(f"/admin/users/{_arabic_indic(admin['id'])}").status_code == 404


@pytest.mark.parametrize("bad", ["9" * 30, str(2**63), "\u0661"])
def test_an_api_id_that_cannot_be_one_is_a_json_404(client: Any, ui_site: dict[str, Any], bad: str) -> None:
    auth = {"Authorization": f"Bearer {ui_site['api_key']}"}
    response = client.get(f"/api/v1/comments/{bad}", headers=auth)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    feedback = client.post(f"/api/v1/comments/{bad}/feedback", json={"label": "spam"}, headers=auth)
    assert feedback.status_code == 404


@pytest.mark.parametrize("bad", NOT_IDS)
def test_list_filters_ignore_ids_that_cannot_be_ones(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any], bad: str
) -> None:
    add_comment(ui_site["id"], content="still listed")
    login(client, moderator)
    for name in ("site", "after", "before", "page"):
        for path in ("/moderation/", "/moderation/all"):
            response = client.get(path, query_string={name: bad})
            assert response.status_code == 200, (path, name)
            assert b"still listed" in response.data, (path, name)


@pytest.mark.parametrize("bad", NOT_IDS)
def test_actions_and_undo_on_ids_that_cannot_be_ones_select_nothing(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any], bad: str
) -> None:
    cid = add_comment(ui_site["id"])
    token = login(client, moderator)
    json_accept = {"Accept": "application/json"}
    one = client.post("/moderation/act", data={"one": f"{bad}:approve", "csrf_token": token}, headers=json_accept)
    assert one.status_code == 400 and one.get_json()["error"]["code"] == "nothing_selected"
    bulk = client.post(
        "/moderation/act",
        data={"action": "spam", "ids": [bad, str(cid)], f"seen_{cid}": "hold", "csrf_token": token},
        headers=json_accept,
    )
    assert bulk.status_code == 200 and [r["id"] for r in bulk.get_json()["results"]] == [cid]
    undone = client.post("/moderation/undo", data={"event": [bad], "csrf_token": token}, headers=json_accept)
    assert undone.status_code == 200 and undone.get_json()["results"] == []
    form = client.post("/moderation/act", data={"one": f"{bad}:approve", "csrf_token": token})
    assert form.status_code == 302


def test_unicode_digits_in_an_action_do_not_act_on_that_comment(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    cid = add_comment(ui_site["id"])
    token = login(client, moderator)
    response = act(client, token, _arabic_indic(cid), "approve")  # type: ignore[arg-type]
    assert response.status_code == 400
    assert comment_state(cid) == ("hold", "spam") and events_of(cid) == []


def test_admin_site_checkboxes_ignore_ids_that_cannot_be_ones(
    client: Any, admin: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    from service.db import session_scope
    from service.models import User, UserSite

    token = login(client, admin)
    email = f"{unique('mod')}@example.test"
    sites = [*NOT_IDS, _arabic_indic(ui_site["id"])]
    created = client.post(
        "/admin/users", data={"email": email, "role": "moderator", "sites": sites, "csrf_token": token}
    )
    assert created.status_code == 201
    with session_scope() as db:
        uid = db.scalars(select(User.id).where(User.email == email)).one()
        assert list(db.scalars(select(UserSite.site_id).where(UserSite.user_id == uid))) == []
    updated = client.post(
        f"/admin/users/{uid}",
        data={"role": "moderator", "active": "on", "sites": [*sites, str(ui_site["id"])], "csrf_token": token},
    )
    assert updated.status_code == 302
    with session_scope() as db:
        assert list(db.scalars(select(UserSite.site_id).where(UserSite.user_id == uid))) == [ui_site["id"]]


# --- actions, races, undo ------------------------------------------------------------------------------------


def test_action_is_audited_labelled_and_answered(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    cid = add_comment(ui_site["id"])
    token = login(client, moderator)
    response = act(client, token, cid, "abuse")
    assert response.status_code == 200
    body = response.get_json()
    assert body["results"] == [
        {
            "id": cid,
            "applied": True,
            "message": "rejected as abuse",
            "decision": "reject",
            "category": "abuse",
            "unchanged": False,
        }
    ]
    assert len(body["undo"]["events"]) == 1
    assert comment_state(cid) == ("reject", "abuse")
    assert events_of(cid) == [(f"user:{moderator['id']}", "reject", "hold", "reject")]
    assert current_labels(cid) == ["abuse"]


def test_two_sessions_exactly_one_wins(app: Any, ui_site: dict[str, Any]) -> None:
    first, second = app.test_client(), app.test_client()
    m1, m2 = make_user("moderator", (ui_site["id"],)), make_user("moderator", (ui_site["id"],))
    cid = add_comment(ui_site["id"])
    t1, t2 = login(first, m1), login(second, m2)
    r1 = act(first, t1, cid, "approve").get_json()["results"][0]
    r2 = act(second, t2, cid, "spam").get_json()["results"][0]
    assert r1["applied"] is True and r2["applied"] is False
    assert "already changed to 'approve' by someone else" in r2["message"]
    assert comment_state(cid) == ("approve", None)
    assert events_of(cid) == [(f"user:{m1['id']}", "approve", "hold", "approve")]
    # Without JavaScript the loser sees the same message as a flash.
    page = second.post(
        "/moderation/act",
        data={"one": f"{cid}:spam", f"seen_{cid}": "hold", "csrf_token": t2, "next": "/moderation/"},
        follow_redirects=True,
    )
    assert b"already changed to" in page.data


def test_bulk_and_undo(client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]) -> None:
    ids = [add_comment(ui_site["id"]) for _ in range(3)]
    token = login(client, moderator)
    data: dict[str, Any] = {"action": "spam", "ids": [str(i) for i in ids], "csrf_token": token}
    data.update({f"seen_{i}": "hold" for i in ids})
    body = client.post("/moderation/act", data=data, headers={"Accept": "application/json"}).get_json()
    assert [r["applied"] for r in body["results"]] == [True, True, True]
    assert all(comment_state(i) == ("reject", "spam") for i in ids)
    undone = client.post(
        "/moderation/undo",
        data={"event": [str(e) for e in body["undo"]["events"]], "csrf_token": token},
        headers={"Accept": "application/json"},
    ).get_json()
    assert [r["applied"] for r in undone["results"]] == [True, True, True]
    for i in ids:
        assert comment_state(i) == ("hold", "spam")
        assert [e[1] for e in events_of(i)] == ["reject", "undo"]
        assert current_labels(i) == []


def test_undo_is_only_for_own_recent_actions(app: Any, ui_site: dict[str, Any]) -> None:
    from datetime import UTC, datetime, timedelta

    from service.auth.session import CurrentUser
    from service.moderation.actions import undo

    m1, m2 = make_user("moderator", (ui_site["id"],)), make_user("moderator", (ui_site["id"],))
    a, b = app.test_client(), app.test_client()
    cid = add_comment(ui_site["id"])
    t1, t2 = login(a, m1), login(b, m2)
    event = act(a, t1, cid, "approve").get_json()["undo"]["events"][0]
    stolen = b.post(
        "/moderation/undo", data={"event": str(event), "csrf_token": t2}, headers={"Accept": "application/json"}
    )
    assert stolen.status_code == 403
    me = CurrentUser(m1["id"], m1["email"], "moderator", frozenset({ui_site["id"]}))
    late = undo(me, [event], now=datetime.now(UTC) + timedelta(seconds=30))
    assert late[0].applied is False and late[0].message == "too late to undo"
    assert comment_state(cid) == ("approve", None)


def test_reversing_a_rejection_restores_the_category_on_undo(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    cid = add_comment(ui_site["id"], decision="reject", auto_decision="reject", category="abuse", abuse_score=0.97)
    token = login(client, moderator)
    body = act(client, token, cid, "approve", seen="reject").get_json()
    assert comment_state(cid) == ("approve", None)
    client.post("/moderation/undo", data={"event": str(body["undo"]["events"][0]), "csrf_token": token})
    assert comment_state(cid) == ("reject", "abuse")


def test_undoing_a_rejection_forgets_the_campaign_mark(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    """A slip of the "s" key must not go on rejecting the campaign's later copies once it is undone."""
    from service import redis_bus

    key = f"undo-camp-{ui_site['id']}"
    cid = add_comment(ui_site["id"], campaign_key=key)
    stream_db = redis_bus.client(redis_bus.STREAM_DB)
    token = login(client, moderator)
    body = act(client, token, cid, "spam").get_json()
    assert stream_db.get(f"cl:{key}:rej") == b"spam"
    client.post("/moderation/undo", data={"event": str(body["undo"]["events"][0]), "csrf_token": token})
    assert comment_state(cid) == ("hold", "spam")
    assert stream_db.get(f"cl:{key}:rej") is None


def test_a_moderators_approval_of_a_copy_clears_the_campaign_mark(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    """docs/stream-checks.md: a human approval of a copy clears the rejected mark. Moderator actions store
    ``decided_by = user:<id>``; the stream checks only knew ``moderator:*``, so the mark stayed and the campaign's
    later copies went on being rejected although a moderator had just said its text is fine."""
    from service import redis_bus

    key = f"approve-camp-{ui_site['id']}"
    rejected, approved = (add_comment(ui_site["id"], campaign_key=key) for _ in range(2))
    stream_db = redis_bus.client(redis_bus.STREAM_DB)
    token = login(client, moderator)
    assert act(client, token, rejected, "spam").get_json()["results"][0]["applied"]
    assert stream_db.get(f"cl:{key}:rej") == b"spam"
    assert act(client, token, approved, "approve").get_json()["results"][0]["applied"]
    assert comment_state(approved) == ("approve", None)
    assert stream_db.get(f"cl:{key}:rej") is None


def test_undo_records_the_moderator_like_every_other_action(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    """The undo wrote ``decided_by = moderator:<id>`` where every other action writes the actor ``user:<id>``."""
    from service.db import session_scope
    from service.models import Comment

    cid = add_comment(ui_site["id"])
    token = login(client, moderator)
    body = act(client, token, cid, "approve").get_json()
    client.post("/moderation/undo", data={"event": str(body["undo"]["events"][0]), "csrf_token": token})
    with session_scope() as db:
        c = db.get(Comment, cid)
        assert c is not None and (c.decision, c.decided_by) == ("hold", f"user:{moderator['id']}")


def deliveries_of(comment_id: int) -> int:
    """How many callbacks to the blog a comment has in the outbox."""
    from sqlalchemy import func

    from service.db import session_scope
    from service.models import CallbackDelivery

    with session_scope() as db:
        return db.scalar(select(func.count()).where(CallbackDelivery.comment_id == comment_id)) or 0


def test_an_action_on_comments_already_in_that_state_changes_and_sends_nothing(client: Any) -> None:
    """Re-approving an approved comment (a bulk selection on "All comments") writes no event, label or callback."""
    site = make_ui_site(callback_url="http://127.0.0.1:9/bouncer-callback")
    moderator = make_user("moderator", (site["id"],))
    held = add_comment(site["id"])
    approved = add_comment(site["id"], decision="approve", category=None)
    spam = add_comment(site["id"], decision="reject", category="spam")
    token = login(client, moderator)

    def bulk(action: str, ids: list[int], seen: list[str], **extra: Any) -> Any:
        data: dict[str, Any] = {"action": action, "ids": [str(i) for i in ids], "csrf_token": token, **extra}
        data.update({f"seen_{i}": s for i, s in zip(ids, seen, strict=True)})
        return client.post("/moderation/act", data=data, headers={"Accept": "application/json"}).get_json()

    body = bulk("approve", [held, approved], ["hold", "approve"])
    assert [(r["id"], r["applied"], r["unchanged"], r["message"]) for r in body["results"]] == [
        (held, True, False, "approved"),
        (approved, False, True, "already approved"),
    ]
    assert len(body["undo"]["events"]) == 1
    assert events_of(approved) == [] and current_labels(approved) == [] and deliveries_of(approved) == 0
    assert deliveries_of(held) == 1
    # Undo puts back the one that changed; the other was never touched.
    undone = client.post(
        "/moderation/undo",
        data={"event": [str(e) for e in body["undo"]["events"]], "csrf_token": token},
        headers={"Accept": "application/json"},
    ).get_json()
    assert [(r["id"], r["applied"]) for r in undone["results"]] == [(held, True)]
    assert comment_state(held) == ("hold", "spam") and comment_state(approved) == ("approve", None)
    assert events_of(approved) == [] and deliveries_of(approved) == 0

    # The category is part of the state: spam → abuse changes the comment, spam → spam does not.
    assert [r["unchanged"] for r in act(client, token, spam, "spam", seen="reject").get_json()["results"]] == [True]
    assert events_of(spam) == [] and deliveries_of(spam) == 0
    assert act(client, token, spam, "abuse", seen="reject").get_json()["results"][0]["applied"] is True
    assert comment_state(spam) == ("reject", "abuse") and deliveries_of(spam) == 1

    # Without JavaScript the flashes count what changed, and say what was already so.
    page = client.post(
        "/moderation/act",
        data={
            "action": "approve",
            "ids": [str(held), str(approved)],
            f"seen_{held}": "hold",
            f"seen_{approved}": "approve",
            "csrf_token": token,
            "next": "/moderation/all",
        },
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "1 comment approved." in page and "1 comment was already approved." in page
    assert f"Comment #{approved}" not in page  # not a conflict
    assert events_of(approved) == [] and deliveries_of(approved) == 0


def test_campaign_reject(client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]) -> None:
    key = "camp-" + str(ui_site["id"])
    members = [add_comment(ui_site["id"], campaign_key=key) for _ in range(4)]
    members.append(add_comment(ui_site["id"], campaign_key=key, decision="approve", category=None))
    outsider = add_comment(make_ui_site()["id"], campaign_key=key)  # another site: not this moderator's
    token = login(client, moderator)
    page = client.get("/moderation/").get_data(as_text=True)
    assert "5 similar comments" in page and "Reject the campaign" in page
    assert client.get(f"/moderation/campaigns/{key}").status_code == 200
    body = client.post(
        f"/moderation/campaigns/{key}/reject",
        data={"category": "spam", "csrf_token": token},
        headers={"Accept": "application/json"},
    ).get_json()
    assert sorted(r["id"] for r in body["results"] if r["applied"]) == sorted(members)
    assert all(comment_state(i) == ("reject", "spam") for i in members)
    assert comment_state(outsider) == ("hold", "spam")


# --- pages ---------------------------------------------------------------------------------------------------


def test_queue_filters_counts_and_pages(client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]) -> None:
    from service.models import erased_email

    add_comment(ui_site["id"], content="needle in the haystack", author_email="needle@example.org")
    add_comment(ui_site["id"], content="abusive words", category="abuse", abuse_score=0.7, spam_score=0.1)
    add_comment(ui_site["id"], decision="approve", category=None, content="approved one")
    add_comment(ui_site["id"], decision="reject", content="rejected one")
    login(client, moderator)
    page = client.get(f"/moderation/?site={ui_site['id']}").get_data(as_text=True)
    counts = dict(re.findall(r'data-status="(\w+)".*?<span class="count">(\d+)</span>', page, re.S))
    assert counts == {"hold": "2", "approve": "1", "reject": "1", "all": "4"}
    assert b"needle in the haystack" in client.get("/moderation/?q=NEEDLE@example").data
    assert b"needle in the haystack" not in client.get("/moderation/?q=nothing-like-it").data
    # data retention keeps a keyed digest of an old comment's e-mail: the whole address still finds it
    add_comment(ui_site["id"], content="an author since erased", author_email=erased_email("gone@example.org"))
    assert b"an author since erased" in client.get("/moderation/?q=Gone@Example.org").data
    assert b"an author since erased" not in client.get("/moderation/?q=gone@").data
    abuse = client.get("/moderation/?category=abuse&score_min=0.5").data
    assert b"abusive words" in abuse and b"needle" not in abuse
    assert b"approved one" in client.get("/moderation/all?status=approve").data
    assert client.get("/moderation/?page=999&sort=uncertain&since=bad-date").status_code == 200


def test_detail_shows_history_and_other_comments(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    email = "history@example.org"
    older = add_comment(ui_site["id"], author_email=email, content="older comment", decision="approve", category=None)
    cid = add_comment(ui_site["id"], author_email=email, content="the comment in question")
    token = login(client, moderator)
    act(client, token, cid, "spam")
    page = client.get(f"/moderation/comments/{cid}").get_data(as_text=True)
    assert "the comment in question" in page and f"/moderation/comments/{older}" in page
    assert "1 approved" in page
    assert moderator["email"] in page and "hold → reject" in page


def test_author_history_matches_e_mails_whatever_their_case(
    client: Any, moderator: dict[str, Any], ui_site: dict[str, Any]
) -> None:
    """Ann@Example.org and ann@example.org are one author: the record and the other comments show both."""
    local = unique("ann")
    approved = add_comment(
        ui_site["id"], author_email=f"{local.title()}@Example.org", decision="approve", category=None
    )
    rejected = add_comment(ui_site["id"], author_email=f"{local.upper()}@EXAMPLE.ORG", decision="reject")
    cid = add_comment(ui_site["id"], author_email=f"{local}@example.org", content="the comment in question")
    login(client, moderator)
    detail = client.get(f"/moderation/comments/{cid}").get_data(as_text=True)
    assert f"/moderation/comments/{approved}" in detail and f"/moderation/comments/{rejected}" in detail
    assert '1 approved</span> · <span class="bad">1 rejected' in detail
    queue = client.get(f"/moderation/?site={ui_site['id']}").get_data(as_text=True)
    row = queue[queue.index(f'id="c{cid}"') :]
    assert '1 approved</span> · <span class="bad">1 rejected' in row[: row.index("</article>")]


def test_author_e_mail_lookups_use_the_index(bouncer_env: dict[str, str]) -> None:
    """The case-insensitive match runs on every scoring batch and queue page: it must be an index lookup."""
    from sqlalchemy import select, text

    from service.db import session_scope
    from service.models import Comment, author_email_in

    stmt = select(Comment.id).where(author_email_in(["Ann@Example.org", "bob@example.org"]))
    with session_scope() as db:
        dialect = db.get_bind().dialect
        sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if dialect.name == "sqlite":
            plan = " ".join(str(row[-1]) for row in db.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        else:
            db.execute(text("SET LOCAL enable_seqscan = off"))  # a test table is small enough to scan
            plan = " ".join(str(row[0]) for row in db.execute(text(f"EXPLAIN {sql}")))
    assert "ix_comments_author_email_lower" in plan, plan


# --- admin ---------------------------------------------------------------------------------------------------


def test_admin_site_keys_thresholds_lists(client: Any, admin: dict[str, Any]) -> None:
    from service.db import session_scope
    from service.models import ListEntry, Site
    from service.security import hash_key

    token = login(client, admin)
    created = client.post("/admin/sites", data={"name": "New blog", "url": "https://new.example", "csrf_token": token})
    assert created.status_code == 201
    html = created.get_data(as_text=True)
    api_key = re.search(r'data-role="api-key">([^<]+)<', html).group(1)  # type: ignore[union-attr]
    with session_scope() as db:
        site = db.scalars(select(Site).where(Site.api_key_hash == hash_key(api_key))).one()
        site_id = site.id
    page = client.get(f"/admin/sites/{site_id}").get_data(as_text=True)
    assert api_key not in page  # shown once
    replacing = re.search(r'name="replacing" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    rotated = client.post(
        f"/admin/sites/{site_id}/rotate-keys", data={"csrf_token": token, "replacing": replacing}
    ).get_data(as_text=True)
    new_key = re.search(r'data-role="api-key">([^<]+)<', rotated).group(1)  # type: ignore[union-attr]
    assert new_key != api_key
    for spam in (0.1, 0.5, 0.95):
        add_comment(site_id, spam_score=spam, abuse_score=0.0)
    preview = client.get(f"/admin/sites/{site_id}/preview?spam_approve_below=0.3&spam_reject_at=0.9").get_json()
    assert preview == {"approve": 1, "hold": 1, "reject": 1, "total": 3}
    assert client.get(f"/admin/sites/{site_id}/preview?spam_approve_below=0.9&spam_reject_at=0.3").status_code == 400
    client.post(
        f"/admin/sites/{site_id}/thresholds",
        data={"spam_approve_below": "0.3", "spam_reject_at": "0.85", "csrf_token": token},
    )
    client.post(
        f"/admin/sites/{site_id}/lists",
        data={"action": "block", "kind": "ip", "value": "203.0.113.0/24", "csrf_token": token},
    )
    client.post(
        f"/admin/sites/{site_id}",
        data={
            "name": "Renamed",
            "url": "https://new.example",
            "callback_url": "https://new.example/cb",
            "active": "on",
            "csrf_token": token,
        },
    )
    bad = client.post(f"/admin/sites/{site_id}", data={"name": "x", "url": "javascript:alert(1)", "csrf_token": token})
    assert bad.status_code == 400
    with session_scope() as db:
        saved = db.get(Site, site_id)
        assert saved is not None
        assert (saved.spam_approve_below, saved.spam_reject_at, saved.abuse_reject_at) == (0.3, 0.85, None)
        assert saved.name == "Renamed" and saved.callback_url == "https://new.example/cb"
        assert db.scalars(select(ListEntry.value).where(ListEntry.site_id == site_id)).all() == ["203.0.113.0/24"]


def test_a_blocked_domain_catches_links_in_the_text_an_allowed_one_only_the_author(
    client: Any, admin: dict[str, Any], worker: Any
) -> None:
    """The site page says a domain entry is "of author URL, e-mail or links"; only the author's URL and e-mail
    were matched, so a comment linking to a blocked domain was approved. A link is matched for block entries
    only: an allowed link domain would let any spam through that carries one such link."""
    from tests.conftest import post_comment

    site = make_ui_site()
    token = login(client, admin)
    for action, value in (("block", "casino-links.example"), ("allow", "wikipedia.org")):
        client.post(
            f"/admin/sites/{site['id']}/lists",
            data={"action": action, "kind": "domain", "value": value, "csrf_token": token},
        )
    linked = post_comment(
        client,
        site["api_key"],
        {
            "content": "Loved the pictures of the tulip beds, more photos at https://www.casino-links.example/tulips.",
            "author": {"name": "Tulip Fan", "email": "tulips@mail.example"},
        },
        wait=8000,
    ).get_json()
    assert (linked["status"], linked["decision"]) == ("decided", "reject"), linked
    assert "author or link domain matches the blocklist entry 'casino-links.example'" in linked["reasons"]
    spam = post_comment(
        client,
        site["api_key"],
        {
            "content": "Earn money online fast!!! Click here http://bit.ly/3xYz and start today, "
            "as https://en.wikipedia.org/wiki/Money says",
            "author": {"name": "Make Money"},
        },
        wait=8000,
    ).get_json()
    assert (spam["status"], spam["decision"]) == ("decided", "reject"), spam
    assert not any("allowlist" in r for r in spam["reasons"])
    author = post_comment(
        client,
        site["api_key"],
        {"content": "A reader from a trusted place.", "author": {"name": "Editor", "url": "https://de.wikipedia.org/"}},
        wait=8000,
    ).get_json()
    assert author["decision"] == "approve" and any("allowlist entry 'wikipedia.org'" in r for r in author["reasons"])


@pytest.mark.parametrize(
    "bad",
    ["http://", "https://blog .example/cb", "http://:8080/cb", "https://blog.example:99999/cb", "ftp://blog.example"],
)
def test_a_callback_url_that_cannot_be_reached_is_refused(client: Any, admin: dict[str, Any], bad: str) -> None:
    """The forms only checked that the URL starts with http(s)://: 'http://', a host with a space or no host at
    all was saved, and every decision's callback then failed its 8 attempts. The CLI did not check at all."""
    from click.testing import CliRunner

    from service.cli import main
    from service.db import session_scope
    from service.models import Site

    site = make_ui_site("https://blog.example/cb")
    token = login(client, admin)
    form = {"name": "Blog", "url": "https://blog.example", "active": "on", "csrf_token": token}
    answer = client.post(f"/admin/sites/{site['id']}", data={**form, "callback_url": bad})
    assert answer.status_code == 400 and "must be an http(s) URL with a host" in answer.get_data(as_text=True)
    assert client.post("/admin/sites", data={**form, "callback_url": bad}).status_code == 400
    assert client.post(f"/admin/sites/{site['id']}", data={**form, "url": bad}).status_code == 400
    with session_scope() as db:
        saved = db.get(Site, site["id"])
        assert saved is not None and saved.callback_url == "https://blog.example/cb"
        names = db.scalars(select(Site.name).where(Site.callback_url == bad)).all()
        assert names == []
    result = CliRunner().invoke(
        main, ["sites", "create", "--name", "C", "--url", "https://c.example", "--callback-url", bad]
    )
    assert result.exit_code == 1 and "must be an http(s) URL with a host" in result.output
    ok = client.post(f"/admin/sites/{site['id']}", data={**form, "callback_url": "http://127.0.0.1:8199/cb"})
    assert ok.status_code == 302


def test_admin_users_and_site_assignment(client: Any, admin: dict[str, Any], ui_site: dict[str, Any]) -> None:
    token = login(client, admin)
    # the browser's type="email" check is not all: the server makes it too (as `bouncer users create` does)
    refused = client.post("/admin/users", data={"email": "new.mod@", "role": "moderator", "csrf_token": token})
    assert refused.status_code == 400 and b"is not an e-mail address" in refused.data
    response = client.post(
        "/admin/users",
        data={"email": "new.mod@example.test", "role": "moderator", "sites": [str(ui_site["id"])], "csrf_token": token},
    )
    assert response.status_code == 201
    password = re.search(r'data-role="password">([^<]+)<', response.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    other = make_ui_site()
    cid = add_comment(other["id"])
    fresh = client.application.test_client()
    login(fresh, {"email": "new.mod@example.test", "password": password})
    assert fresh.get(f"/moderation/comments/{cid}").status_code == 403
    from service.db import session_scope
    from service.models import User

    with session_scope() as db:
        uid = db.scalars(select(User.id).where(User.email == "new.mod@example.test")).one()
    client.post(
        f"/admin/users/{uid}",
        data={"role": "moderator", "active": "on", "sites": [str(other["id"])], "csrf_token": token},
    )
    assert fresh.get(f"/moderation/comments/{cid}").status_code == 200
    # An admin cannot lock themselves out.
    client.post(f"/admin/users/{admin['id']}", data={"role": "moderator", "active": "on", "csrf_token": token})
    assert client.get("/admin/users").status_code == 200


def test_models_page_renders_with_or_without_models(client: Any, admin: dict[str, Any]) -> None:
    login(client, admin)
    response = client.get("/admin/models")
    assert response.status_code == 200
    assert b"Spam model" in response.data and b"Abuse model" in response.data


def test_models_page_flags_a_model_trained_under_older_feature_code(
    client: Any, admin: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from classifiers import ModelRegistry
    from classifiers.registry import STARTER_DIR
    from service.admin import models_page

    shipped = sorted((STARTER_DIR / "spam").iterdir())[-1]
    old = tmp_path / "spam" / "spam-20200101T000000Z-0ld0ld00"
    shutil.copytree(shipped, old)
    manifest = json.loads((old / "manifest.json").read_text(encoding="utf-8"))
    del manifest["features_version"]  # trained before feature versions were recorded
    (old / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    state = {"active": old.name, "history": [], "statuses": {old.name: {"status": "active", "note": "promoted"}}}
    # an admin promoted the old model, so the shipped starter is taken in as a candidate
    (tmp_path / "spam" / "active.json").write_text(json.dumps(state), encoding="utf-8")
    monkeypatch.setattr(models_page, "_registry", lambda: ModelRegistry(tmp_path))
    login(client, admin)
    page = client.get("/admin/models").get_data(as_text=True)
    spam = page[page.index('id="kind-spam"') : page.index('id="kind-abuse"')]
    rows = spam.split("<tr")
    assert [old.name in r for r in rows if "retrain: older features" in r] == [True]  # the shipped one reads as trained


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A model registry of this test's own, served by the app (BOUNCER_MODELS_DIR)."""
    from service.config import settings

    monkeypatch.setenv("BOUNCER_MODELS_DIR", str(tmp_path / "models"))
    settings.cache_clear()
    yield tmp_path / "models"
    monkeypatch.undo()
    settings.cache_clear()


def test_roll_back_is_offered_only_when_there_is_an_earlier_model(
    client: Any, admin: dict[str, Any], models_dir: Path
) -> None:
    """Two versions are not enough: a candidate that was never active leaves nothing to roll back to."""
    from classifiers import ModelRegistry
    from classifiers.registry import STARTER_DIR

    shipped = sorted((STARTER_DIR / "spam").iterdir())[-1]
    ModelRegistry(models_dir).versions("spam")  # seeded: the shipped starter is active, with no history
    candidate = "spam-29990101T000000Z-cand1dat"
    shutil.copytree(shipped, models_dir / "spam" / candidate)
    token = login(client, admin)

    def spam_panels() -> list[str]:
        """The spam panels of the models page and of the retraining page, each with its own Roll back."""
        models = client.get("/admin/models").get_data(as_text=True)
        versions = client.get("/admin/retraining").get_data(as_text=True)
        return [
            models[models.index('id="kind-spam"') : models.index('id="kind-abuse"')],
            versions[versions.index('id="versions-spam"') : versions.index('id="versions-abuse"')],
        ]

    assert [candidate in p and "Roll back" not in p for p in spam_panels()] == [True, True]
    # A stale page (or a second admin) may still post it: a plain answer, nothing changed.
    for url in ("/admin/models/spam/rollback", "/admin/retraining/spam/rollback"):
        answer = client.post(url, data={"csrf_token": token}, follow_redirects=True)
        assert answer.status_code == 200
        assert "There is no earlier spam model to roll back to." in answer.get_data(as_text=True)
        assert ModelRegistry(models_dir).active("spam").version == shipped.name

    client.post("/admin/models/spam/promote", data={"version": candidate, "csrf_token": token})
    assert ["Roll back" in p for p in spam_panels()] == [True, True]
    answer = client.post("/admin/models/spam/rollback", data={"csrf_token": token}, follow_redirects=True)
    assert f"spam model rolled back to {shipped.name}." in answer.get_data(as_text=True)
    assert ModelRegistry(models_dir).active("spam").version == shipped.name
    assert ["Roll back" in p for p in spam_panels()] == [False, False]  # the history is used up
