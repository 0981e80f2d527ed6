"""Two-factor sign-in (TOTP): enrolment at /account/two-factor, the second step of a sign-in, replay and lockout,
recovery codes, turning it off (the user, an admin, the CLI), CSRF. Codes are made with pyotp from the secret the
page shows, as an authenticator app would."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select

from tests.ui.helpers import PASSWORD, BrowserSession, csrf_from, login, make_user

STEP = 30


# --- helpers -------------------------------------------------------------------------------------------------


def _user_row(user_id: int) -> dict[str, Any]:
    from service.db import session_scope
    from service.models import RecoveryCode, User

    with session_scope() as db:
        u = db.get(User, user_id)
        assert u is not None
        codes = db.scalar(select(func.count()).select_from(RecoveryCode).where(RecoveryCode.user_id == user_id))
        return {
            "secret": u.totp_secret,
            "pending": u.totp_pending_secret,
            "enabled_at": u.totp_enabled_at,
            "last_step": u.totp_last_step,
            "failed": u.failed_logins,
            "locked_until": u.locked_until,
            "recovery_codes": codes,
        }


def fresh_code(user_id: int, secret: str) -> str:
    """A code the server accepts now: the current step's, or the next step's when the current one was used already
    (the step of the enrolment's code, within the same 30 seconds)."""
    last = _user_row(user_id)["last_step"]
    step = int(time.time()) // STEP
    if last is not None and step <= last:
        step = last + 1
    return pyotp.TOTP(secret).at(step * STEP)


def wrong_code(secret: str) -> str:
    """A 6-digit code that is none of the steps around now."""
    valid = {pyotp.TOTP(secret).at(time.time() + d * STEP) for d in range(-3, 4)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in valid)


def enable_in_db(user_id: int) -> tuple[str, list[str]]:
    """Turn two-factor sign-in on for a user as the enrolment leaves it (no code used yet); the secret and the
    recovery codes."""
    from service.auth import two_factor
    from service.db import session_scope
    from service.models import RecoveryCode, User
    from service.security import hash_key

    secret = pyotp.random_base32()
    codes = two_factor.new_recovery_codes()
    with session_scope() as db:
        u = db.get(User, user_id)
        assert u is not None
        u.totp_secret = two_factor.encrypt_secret(secret)
        u.totp_enabled_at = datetime.now(UTC)
        db.add_all(
            RecoveryCode(user_id=user_id, code_hash=hash_key(two_factor.normalize_recovery_code(c))) for c in codes
        )
    return secret, codes


def login_password(client: Any, user: dict[str, Any], next_: str = "") -> Any:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post(
        "/login", data={"email": user["email"], "password": user["password"], "csrf_token": token, "next": next_}
    )


def send_code(client: Any, code: str) -> Any:
    page = client.get("/login/two-factor")
    assert page.status_code == 200, page.status_code
    return client.post("/login/two-factor", data={"code": code, "csrf_token": csrf_from(page.get_data(as_text=True))})


def signed_in(client: Any) -> bool:
    response = client.get("/moderation/")
    if response.status_code == 302:
        assert "/login" in response.headers["Location"]
        return False
    assert response.status_code == 200
    return True


def secret_on_page(text: str) -> str:
    match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', text)
    assert match, "no secret on the page"
    return match.group(1)


def recovery_codes_on_page(text: str) -> list[str]:
    block = re.search(r'id="recovery-codes">(.*?)</ul>', text, re.S)
    assert block, "no recovery codes on the page"
    return re.findall(r"<code>([a-z0-9-]+)</code>", block.group(1))


def start_enrolment(client: Any, token: str) -> str:
    response = client.post("/account/two-factor/start", data={"csrf_token": token})
    assert response.status_code == 302
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "<svg" in page and 'class="qr"' in page
    return secret_on_page(page)


# --- enrolment -----------------------------------------------------------------------------------------------


def test_enrolment_refuses_a_wrong_code_then_a_right_one_turns_it_on_and_shows_recovery_codes_once(
    app: Any, client: Any, bouncer_env: dict[str, str]
) -> None:
    user = make_user("moderator")
    elsewhere = app.test_client()  # signed in with the password before two-factor sign-in was on
    login(elsewhere, user)
    token = login(client, user)
    account = client.get("/account").get_data(as_text=True)
    assert '<strong data-role="two-factor-state">off</strong>' in account
    page = client.get("/account/two-factor")
    assert page.status_code == 200 and b"Set up two-factor sign-in" in page.data
    secret = start_enrolment(client, token)

    # A wrong code, and the right code with a wrong password: refused, still off.
    response = client.post(
        "/account/two-factor/enable", data={"code": wrong_code(secret), "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 400 and b"not the current one" in response.data
    response = client.post(
        "/account/two-factor/enable",
        data={"code": pyotp.TOTP(secret).now(), "password": "not the password", "csrf_token": token},
    )
    assert response.status_code == 400 and b"Wrong password" in response.data
    assert _user_row(user["id"])["secret"] is None

    # A secret sent along in the form is not taken: the code of another secret is refused.
    other = pyotp.random_base32()
    response = client.post(
        "/account/two-factor/enable",
        data={"code": pyotp.TOTP(other).now(), "secret": other, "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 400
    assert _user_row(user["id"])["secret"] is None

    response = client.post(
        "/account/two-factor/enable", data={"code": pyotp.TOTP(secret).now(), "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    codes = recovery_codes_on_page(text)
    assert len(codes) == 10 and len(set(codes)) == 10
    row = _user_row(user["id"])
    assert row["secret"] is not None and row["enabled_at"] is not None and row["pending"] is None
    assert secret not in row["secret"]  # stored encrypted
    assert row["recovery_codes"] == 10 and row["last_step"] is not None
    # Turning it on signs the user out everywhere else (a leaked password's session too); this browser stays.
    assert not signed_in(elsewhere)
    assert signed_in(client)

    account = client.get("/account").get_data(as_text=True)
    assert '<strong data-role="two-factor-state">on</strong>' in account and 'href="/account/two-factor"' in account

    # Shown once: the page afterwards says it is on and shows neither codes nor the secret.
    after = client.get("/account/two-factor").get_data(as_text=True)
    assert "is <strong>on</strong>" in after
    assert not any(c in after for c in codes) and secret not in after
    assert 'id="recovery-left">10<' in after

    # The recovery codes are stored hashed.
    from service.db import session_scope
    from service.models import RecoveryCode
    from service.security import hash_key

    with session_scope() as db:
        hashes = set(db.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user["id"])))
    assert hashes == {hash_key(c.replace("-", "")) for c in codes}

    # The next sign-in asks for a code; the enrolment's code does not serve twice, the next one does.
    client.post("/logout", data={"csrf_token": token})
    response = login_password(client, user)
    assert response.status_code == 302 and response.headers["Location"].endswith("/login/two-factor")
    response = send_code(client, fresh_code(user["id"], secret))
    assert response.status_code == 302
    assert signed_in(client)


def test_an_enrolment_not_confirmed_in_time_starts_again(client: Any, bouncer_env: dict[str, str]) -> None:
    from service.auth import two_factor
    from service.db import session_scope
    from service.models import User

    user = make_user("moderator")
    token = login(client, user)
    # Confirming without having started is refused.
    response = client.post(
        "/account/two-factor/enable", data={"code": "123456", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 400
    start_enrolment(client, token)
    old = pyotp.random_base32()
    stale = two_factor._fernet(two_factor.settings().secret_key).encrypt_at_time(old.encode(), int(time.time()) - 3600)
    with session_scope() as db:
        u = db.get(User, user["id"])
        assert u is not None
        u.totp_pending_secret = stale.decode()
    response = client.post(
        "/account/two-factor/enable", data={"code": pyotp.TOTP(old).now(), "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 400 and b"ran out of time" in response.data
    assert _user_row(user["id"])["secret"] is None


def test_the_account_page_needs_a_sign_in(client: Any, bouncer_env: dict[str, str]) -> None:
    response = client.get("/account/two-factor")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


# --- sign-in -------------------------------------------------------------------------------------------------


def test_the_password_alone_signs_nobody_in_and_the_right_code_does(client: Any, bouncer_env: dict[str, str]) -> None:
    site_next = "/moderation/all?q=roses"
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    response = login_password(client, user, next_=site_next)
    assert response.status_code == 302 and response.headers["Location"].endswith("/login/two-factor")
    assert not signed_in(client)
    assert client.get("/account/two-factor").status_code == 302
    # No session row was made by the password.
    from service.db import session_scope
    from service.models import UserSession

    with session_scope() as db:
        assert db.scalar(select(func.count()).where(UserSession.user_id == user["id"])) == 0

    response = login_password(client, user, next_=site_next)
    response = send_code(client, pyotp.TOTP(secret).now())
    assert response.status_code == 302 and response.headers["Location"] == site_next
    assert signed_in(client)
    # The second step is over: its page sends to the login page.
    assert client.get("/login/two-factor").status_code == 302


def test_next_stays_on_the_site_through_the_second_step(client: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    login_password(client, user, next_="//evil.example/phish")
    response = send_code(client, pyotp.TOTP(secret).now())
    assert response.status_code == 302
    assert response.headers["Location"] == "/moderation/"


def test_users_without_two_factor_sign_in_with_the_password(client: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    assert _user_row(user["id"])["secret"] is None
    response = login_password(client, user, next_="/moderation/all")
    assert response.status_code == 302 and response.headers["Location"] == "/moderation/all"
    assert signed_in(client)
    # No second step was started for them: its page sends back to the login page.
    assert client.get("/login/two-factor").status_code == 302


def test_a_code_is_not_accepted_twice(app: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    first, second = app.test_client(), app.test_client()
    code = pyotp.TOTP(secret).now()
    login_password(first, user)
    assert send_code(first, code).status_code == 302
    login_password(second, user)
    response = send_code(second, code)  # seen over a shoulder, typed in within the same 30 seconds
    assert response.status_code == 401 and b"Wrong code" in response.data
    assert not signed_in(second)
    assert _user_row(user["id"])["failed"] == 1


def test_a_code_of_a_step_before_the_last_used_one_is_refused(client: Any, bouncer_env: dict[str, str]) -> None:
    from service.db import session_scope
    from service.models import User

    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    now_step = int(time.time()) // STEP
    with session_scope() as db:
        u = db.get(User, user["id"])
        assert u is not None
        u.totp_last_step = now_step + 1  # the next step's code was used already
    login_password(client, user)
    assert send_code(client, pyotp.TOTP(secret).at(now_step * STEP)).status_code == 401
    assert not signed_in(client)


def test_codes_of_neighbouring_steps_are_accepted(app: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    client = app.test_client()
    login_password(client, user)
    assert send_code(client, pyotp.TOTP(secret).at(time.time() - STEP)).status_code == 302  # a slow phone clock


def test_wrong_codes_count_towards_the_lockout(client: Any, bouncer_env: dict[str, str]) -> None:
    from service.auth.lockout import MAX_FAILED_LOGINS

    user = make_user("moderator")
    secret, codes = enable_in_db(user["id"])
    login_password(client, user)
    assert send_code(client, wrong_code(secret)).status_code == 401
    assert _user_row(user["id"])["failed"] == 1
    # The right password again does not reset the count (else it would between guesses of the code).
    login_password(client, user)
    assert _user_row(user["id"])["failed"] == 1
    assert send_code(client, "not-a-recovery-code").status_code == 401
    for _ in range(MAX_FAILED_LOGINS - 3):
        assert send_code(client, wrong_code(secret)).status_code == 401
    assert _user_row(user["id"])["failed"] == MAX_FAILED_LOGINS - 1
    token = csrf_from(client.get("/login/two-factor").get_data(as_text=True))
    response = client.post("/login/two-factor", data={"code": wrong_code(secret), "csrf_token": token})
    assert response.status_code == 401 and b"locked" in response.data
    assert _user_row(user["id"])["locked_until"] is not None
    # Locked: neither the password nor a right code signs in, and the code is not used up.
    response = login_password(client, user)
    assert response.status_code == 401 and b"locked" in response.data
    assert client.get("/login/two-factor").status_code == 302
    assert not signed_in(client)
    assert _user_row(user["id"])["recovery_codes"] == 10


def test_a_right_code_while_locked_is_refused(client: Any, bouncer_env: dict[str, str]) -> None:
    from service.db import session_scope
    from service.models import User

    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    login_password(client, user)
    with session_scope() as db:  # wrong guesses from elsewhere lock the account during the second step
        u = db.get(User, user["id"])
        assert u is not None
        u.locked_until = datetime.now(UTC) + timedelta(minutes=15)
    response = send_code(client, pyotp.TOTP(secret).now())
    assert response.status_code == 401 and b"locked" in response.data
    assert not signed_in(client)
    assert _user_row(user["id"])["last_step"] is None


def test_a_recovery_code_works_once(app: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    _, codes = enable_in_db(user["id"])
    client = app.test_client()
    login_password(client, user)
    assert send_code(client, "  " + codes[3].upper() + " ").status_code == 302  # as typed off paper
    assert signed_in(client)
    assert _user_row(user["id"])["recovery_codes"] == 9
    other = app.test_client()
    login_password(other, user)
    response = send_code(other, codes[3])
    assert response.status_code == 401
    assert not signed_in(other)
    assert send_code(other, codes[4].replace("-", "")).status_code == 302
    assert _user_row(user["id"])["recovery_codes"] == 8


def test_the_second_step_expires(client: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    login_password(client, user)
    token = csrf_from(client.get("/login/two-factor").get_data(as_text=True))
    with client.session_transaction() as s:
        pending = dict(s["two_factor"])
        pending["at"] -= 6 * 60  # the password was given six minutes ago
        s["two_factor"] = pending
    response = client.post("/login/two-factor", data={"code": pyotp.TOTP(secret).now(), "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert not signed_in(client)
    assert client.get("/login/two-factor").status_code == 302
    assert _user_row(user["id"])["last_step"] is None  # the code was not even checked


def test_the_second_step_belongs_to_the_browser_that_gave_the_password(app: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    first, other = app.test_client(), app.test_client()
    login_password(first, user)
    assert other.get("/login/two-factor").status_code == 302
    token = csrf_from(other.get("/login").get_data(as_text=True))
    response = other.post("/login/two-factor", data={"code": pyotp.TOTP(secret).now(), "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert not signed_in(other)


def test_a_password_changed_during_the_second_step_ends_it(client: Any, bouncer_env: dict[str, str]) -> None:
    from werkzeug.security import generate_password_hash

    from service.db import session_scope
    from service.models import User

    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    login_password(client, user)
    with session_scope() as db:
        u = db.get(User, user["id"])
        assert u is not None
        u.password_hash = generate_password_hash("a brand new password")
    response = send_code(client, pyotp.TOTP(secret).now())
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert not signed_in(client)


# --- turning it off ------------------------------------------------------------------------------------------


def _sign_in_with_code(client: Any, user: dict[str, Any], secret: str) -> str:
    login_password(client, user)
    assert send_code(client, fresh_code(user["id"], secret)).status_code == 302
    return csrf_from(client.get("/moderation/").get_data(as_text=True))


def test_turning_it_off_needs_the_password_and_a_code(client: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, codes = enable_in_db(user["id"])
    token = _sign_in_with_code(client, user, secret)
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "Turn off two-factor sign-in" in page and 'id="recovery-left">10<' in page

    for data in (
        {"password": "not the password", "code": codes[0]},
        {"password": PASSWORD, "code": wrong_code(secret)},
        {"password": PASSWORD, "code": ""},
    ):
        response = client.post("/account/two-factor/disable", data={**data, "csrf_token": token})
        assert response.status_code == 400 and b"Wrong password or code" in response.data
        assert _user_row(user["id"])["secret"] is not None
    assert _user_row(user["id"])["recovery_codes"] == 10  # the wrong password used no code up

    response = client.post(
        "/account/two-factor/disable",
        data={"password": PASSWORD, "code": fresh_code(user["id"], secret), "csrf_token": token},
    )
    assert response.status_code == 302
    row = _user_row(user["id"])
    assert row["secret"] is None and row["enabled_at"] is None and row["recovery_codes"] == 0
    client.post("/logout", data={"csrf_token": token})
    response = login_password(client, user)
    assert response.status_code == 302 and response.headers["Location"] == "/moderation/"
    assert signed_in(client)


def test_turning_it_off_with_a_recovery_code(client: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, codes = enable_in_db(user["id"])
    token = _sign_in_with_code(client, user, secret)
    response = client.post(
        "/account/two-factor/disable", data={"password": PASSWORD, "code": codes[9], "csrf_token": token}
    )
    assert response.status_code == 302
    assert _user_row(user["id"])["secret"] is None


def test_an_admin_turns_it_off_and_the_users_sessions_end(app: Any, bouncer_env: dict[str, str]) -> None:
    admin = make_user("admin")
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    theirs, mine = app.test_client(), app.test_client()
    _sign_in_with_code(theirs, user, secret)
    token = login(mine, admin)
    page = mine.get(f"/admin/users/{user['id']}").get_data(as_text=True)
    assert 'id="user-two-factor">On' in page

    assert mine.post(f"/admin/users/{user['id']}/two-factor/off", data={}).status_code == 400  # no CSRF token
    assert _user_row(user["id"])["secret"] is not None
    response = mine.post(f"/admin/users/{user['id']}/two-factor/off", data={"csrf_token": token})
    assert response.status_code == 302
    row = _user_row(user["id"])
    assert row["secret"] is None and row["recovery_codes"] == 0
    assert not signed_in(theirs)
    assert signed_in(mine)
    assert 'id="user-two-factor" class="muted">Off' in mine.get(f"/admin/users/{user['id']}").get_data(as_text=True)
    # The password alone signs in again.
    assert login_password(theirs, user).headers["Location"] == "/moderation/"
    assert signed_in(theirs)


def test_a_moderator_cannot_turn_off_anothers_two_factor(app: Any, bouncer_env: dict[str, str]) -> None:
    moderator = make_user("moderator")
    user = make_user("moderator")
    enable_in_db(user["id"])
    client = app.test_client()
    token = login(client, moderator)
    assert client.post(f"/admin/users/{user['id']}/two-factor/off", data={"csrf_token": token}).status_code == 403
    assert _user_row(user["id"])["secret"] is not None


def test_the_cli_turns_it_off_and_ends_the_users_sessions(app: Any, runner: Any, bouncer_env: dict[str, str]) -> None:
    from service.cli_admin import users

    user = make_user("admin")
    secret, _ = enable_in_db(user["id"])
    client = app.test_client()
    _sign_in_with_code(client, user, secret)
    result = runner.invoke(users, ["disable-2fa", user["email"].upper()])
    assert result.exit_code == 0, result.output
    assert '"two_factor": "turned off"' in result.output
    row = _user_row(user["id"])
    assert row["secret"] is None and row["recovery_codes"] == 0
    assert not signed_in(client)
    assert login_password(client, user).status_code == 302
    assert signed_in(client)

    result = runner.invoke(users, ["disable-2fa", "nobody-" + user["email"]])
    assert result.exit_code == 1 and "no user with e-mail" in result.output


# --- CSRF ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/account/two-factor/start", "/account/two-factor/enable", "/account/two-factor/disable"]
)
def test_account_forms_need_csrf(client: Any, bouncer_env: dict[str, str], path: str) -> None:
    user = make_user("moderator")
    login(client, user)
    response = client.post(path, data={"password": PASSWORD, "code": "123456"})
    assert response.status_code == 400
    assert _user_row(user["id"])["pending"] is None


def test_the_second_step_needs_csrf(client: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    secret, _ = enable_in_db(user["id"])
    login_password(client, user)
    response = client.post("/login/two-factor", data={"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 400
    assert not signed_in(client)
    assert _user_row(user["id"])["last_step"] is None


def test_the_qr_code_is_inline_svg_within_the_csp(client: Any, bouncer_env: dict[str, str]) -> None:
    user = make_user("moderator")
    token = login(client, user)
    secret = start_enrolment(client, token)
    response = client.get("/account/two-factor")
    text = response.get_data(as_text=True)
    svg = re.search(r"<svg.*?</svg>", text, re.S)
    assert svg and "style" not in svg.group(0) and "data:" not in text
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert html.escape(secret) in text


# --- in a browser ----------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_enrol_sign_out_and_sign_in_with_a_code_in_a_browser(browser_session: Callable[[], BrowserSession]) -> None:
    user = make_user("moderator")
    s = browser_session()
    s.login(user)
    page = s.page
    with page.expect_navigation():
        page.click('header a[href="/account"]')
    with page.expect_navigation():
        page.click("#two-factor-link")
    page.wait_for_url(re.compile(r".*/account/two-factor$"))
    with page.expect_navigation():
        page.click("button:has-text('Set up two-factor sign-in')")
    page.wait_for_url(re.compile(r".*/account/two-factor$"))
    assert page.locator(".qr-code svg").is_visible()
    secret = page.locator("#totp-secret").inner_text().strip()
    page.fill('input[name="password"]', PASSWORD)
    page.fill('input[name="code"]', fresh_code(user["id"], secret))
    with page.expect_navigation():
        page.click("button:has-text('Turn on two-factor sign-in')")
    page.wait_for_url(re.compile(r".*/account/two-factor/enable$"))
    assert page.locator("#recovery-codes li").count() == 10
    assert _user_row(user["id"])["secret"] is not None

    with page.expect_navigation():
        page.click("button:has-text('Sign out')")
    page.wait_for_url(re.compile(r".*/login$"))
    page.fill('input[name="email"]', user["email"])
    page.fill('input[name="password"]', user["password"])
    with page.expect_navigation():
        page.click('button[type="submit"]')
    page.wait_for_url(re.compile(r".*/login/two-factor$"))
    # The password alone opens nothing.
    assert not page.locator("header .whoami").count()
    page.fill('input[name="code"]', fresh_code(user["id"], secret))  # right before typing: codes change every 30 s
    with page.expect_navigation():
        page.click('button[type="submit"]')
    page.wait_for_url(re.compile(r".*/moderation/.*"))
    assert page.locator("header .whoami").is_visible()
    assert s.errors == [] and s.dialogs == []


def test_a_signed_in_session_cannot_guess_the_password_through_the_two_factor_forms(
    app: Any, bouncer_env: dict[str, str]
) -> None:
    """Turning two-factor sign-in on or off asks for the password: wrong ones count towards the login's lockout, as
    on the account page, so a stolen session cookie is no way to guess the password (or the code) behind it."""
    from service.auth.lockout import MAX_FAILED_LOGINS

    user = make_user("moderator")
    client = app.test_client()
    token = login(client, user)
    secret = start_enrolment(client, token)
    for _ in range(MAX_FAILED_LOGINS - 1):
        response = client.post(
            "/account/two-factor/enable",
            data={"code": pyotp.TOTP(secret).now(), "password": "a guess of the password", "csrf_token": token},
        )
        assert response.status_code == 400 and b"Wrong password" in response.data
    assert _user_row(user["id"])["failed"] == MAX_FAILED_LOGINS - 1
    # The right password clears the count (the user is signed in), and two-factor sign-in is on.
    response = client.post(
        "/account/two-factor/enable", data={"code": pyotp.TOTP(secret).now(), "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 200 and _user_row(user["id"])["failed"] == 0

    # Turning it off: a wrong password or a wrong code counts; at the limit the account is locked, and then even
    # the right password and code are refused (and the code is not used up).
    for n in range(MAX_FAILED_LOGINS):
        wrong = {"password": "a guess", "code": fresh_code(user["id"], secret)} if n % 2 else {}
        data = {"password": PASSWORD, "code": wrong_code(secret)} | wrong
        response = client.post("/account/two-factor/disable", data=data | {"csrf_token": token})
        assert response.status_code == 400
    assert b"locked" in response.data and _user_row(user["id"])["locked_until"] is not None
    last_step = _user_row(user["id"])["last_step"]
    data = {"password": PASSWORD, "code": fresh_code(user["id"], secret), "csrf_token": token}
    response = client.post("/account/two-factor/disable", data=data)
    assert response.status_code == 400 and b"locked" in response.data
    row = _user_row(user["id"])
    assert row["secret"] is not None and row["last_step"] == last_step
    assert login_password(app.test_client(), user).status_code == 401  # the login is locked too
