"""The admin console's page of a site's commenters' requests (service.admin.personal_data_page): look up an
e-mail address, download the export, erase with a confirmation; admins only, CSRF on every form."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import update

from service.db import session_scope
from service.models import Comment, Site
from service.personal_data import EXPORT_PAGE_SIZE
from tests.ui.helpers import login, make_ui_site, unique

PERSONAL = ("author_name", "author_email", "author_url", "author_ip", "user_agent", "referrer")


def _comment(site_id: int, email: str, text: str = "Thanks, the part about pruning helped.", **author: str) -> int:
    """A comment stored as the API stores it, not enqueued: no worker scores it meanwhile."""
    from service.api.schemas import CommentIn
    from service.comments import insert_comment

    data = CommentIn.model_validate(
        {
            "content": text,
            "author": {"name": "Ada Lovelace", "email": email, "url": "https://ada.example", "ip": "203.0.113.9",
                       "user_agent": "Mozilla/5.0 (Ada)", **author},
            "referrer": "https://blog.example/post-1",
            "meta": {"wp_user_id": 17},
        }
    )  # fmt: skip
    with session_scope() as session:
        cid, _created = insert_comment(session, site_id, data)
    return cid


def _row(comment_id: int) -> Comment:
    with session_scope() as session:
        comment = session.get(Comment, comment_id)
        assert comment is not None
        session.expunge(comment)
        return comment


def _address() -> str:
    return f"{unique('ada')}@example.org"


def _shown_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)">', html)]


def _lookup(client: Any, token: str, site_id: int, email: str, **extra: Any) -> Any:
    return client.post(f"/admin/sites/{site_id}/personal-data", data={"email": email, "csrf_token": token, **extra})


def _erase(client: Any, token: str, site_id: int, email: str, **extra: Any) -> Any:
    return client.post(
        f"/admin/sites/{site_id}/personal-data/erase", data={"email": email, "csrf_token": token, **extra}
    )


def test_an_admin_reaches_the_page_from_the_site_page(client: Any, admin: dict[str, Any]) -> None:
    site = make_ui_site()
    login(client, admin)
    site_page = client.get(f"/admin/sites/{site['id']}").get_data(as_text=True)
    assert f'href="/admin/sites/{site["id"]}/personal-data"' in site_page
    response = client.get(f"/admin/sites/{site['id']}/personal-data")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="lookup-form"' in html and 'name="email"' in html and 'name="csrf_token"' in html
    assert 'id="found"' not in html and 'id="erase-form"' not in html  # nothing to show before a lookup
    assert client.get("/admin/sites/999999999/personal-data").status_code == 404


def test_moderators_get_403_and_change_nothing(client: Any, ui_site: dict[str, Any], moderator: dict[str, Any]) -> None:
    email = _address()
    cid = _comment(ui_site["id"], email)
    token = login(client, moderator)  # a moderator of this very site
    base = f"/admin/sites/{ui_site['id']}/personal-data"
    assert client.get(base).status_code == 403
    assert _lookup(client, token, ui_site["id"], email).status_code == 403
    download = client.post(f"{base}/export", data={"email": email, "csrf_token": token})
    assert download.status_code == 403 and b"Ada Lovelace" not in download.data
    assert _erase(client, token, ui_site["id"], email, confirm=email).status_code == 403
    assert _row(cid).author_email == email


def test_the_lookup_lists_that_addresss_comments_on_that_site_only(client: Any, admin: dict[str, Any]) -> None:
    site, other_site = make_ui_site(), make_ui_site()
    local, domain = _address().split("@")
    first = _comment(site["id"], f"{local.capitalize()}@Example.ORG", "The first one.")
    second = _comment(site["id"], f"{local}@{domain}", "The second one.")
    _comment(site["id"], f"grace-{local}@{domain}", "A bystander's comment.", name="Grace")
    _comment(other_site["id"], f"{local}@{domain}", "Another blog's comment.")
    token = login(client, admin)
    response = _lookup(client, token, site["id"], f"  {local.upper()}@example.org ")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert _shown_ids(html) == [first, second]  # this site's only, oldest first, any case
    assert '<span data-role="count">2</span> comments' in html
    assert "The first one." in html and "The second one." in html and "Ada Lovelace" in html
    assert "203.0.113.9" in html and "Mozilla/5.0 (Ada)" in html and "https://ada.example" in html
    assert "bystander" not in html and "Grace" not in html and "Another blog" not in html
    assert 'id="export-form"' in html and 'id="erase-form"' in html
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"


def test_hostile_comment_data_is_shown_escaped(client: Any, admin: dict[str, Any]) -> None:
    site = make_ui_site()
    email = _address()
    _comment(
        site["id"],
        email,
        "<script>alert(1)</script>",
        name="<img src=x onerror=alert(2)>",
        url="javascript:alert(3)",
        user_agent='"><svg onload=alert(4)>',
    )
    token = login(client, admin)
    html = _lookup(client, token, site["id"], email).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<svg" not in html and "&lt;svg onload=alert(4)&gt;" in html
    assert 'href="javascript:' not in html and "javascript:alert(3)" in html  # shown, not a link


def test_the_download_is_the_export_as_a_json_attachment(client: Any, admin: dict[str, Any]) -> None:
    site = make_ui_site()
    email = _address()
    first = _comment(site["id"], email, "First comment, <b>bold</b>.")
    second = _comment(site["id"], email.upper(), "Second comment.")
    _comment(site["id"], _address(), "Someone else's.")
    token = login(client, admin)
    response = client.post(
        f"/admin/sites/{site['id']}/personal-data/export", data={"email": email.upper(), "csrf_token": token}
    )
    assert response.status_code == 200 and response.mimetype == "application/json"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and ".json" in disposition and email not in disposition
    body = json.loads(response.get_data(as_text=True))
    assert body["site"] == site["id"] and body["email"] == email.upper()
    assert [c["id"] for c in body["comments"]] == [first, second]
    assert body["comments"][0]["content"] == "First comment, <b>bold</b>."
    assert body["comments"][0]["author"] == {
        "name": "Ada Lovelace",
        "email": email,
        "url": "https://ada.example",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (Ada)",
    }
    assert body["comments"][0]["meta"] == {"wp_user_id": 17}
    assert body["comments"][1]["author"]["email"] == email.upper()


def test_the_page_and_the_download_follow_the_exports_pages(client: Any, admin: dict[str, Any]) -> None:
    site = make_ui_site()
    email = _address()
    with session_scope() as session:
        rows = [
            Comment(site_id=site["id"], content=f"comment {i}", author_email=email, status="decided")
            for i in range(EXPORT_PAGE_SIZE + 3)
        ]
        session.add_all(rows)
        session.flush()
        ids = sorted(c.id for c in rows)
    token = login(client, admin)
    first = _lookup(client, token, site["id"], email).get_data(as_text=True)
    assert _shown_ids(first) == ids[:EXPORT_PAGE_SIZE]
    assert f'<span data-role="count">{EXPORT_PAGE_SIZE + 3}</span>' in first
    assert 'name="page" value="2"' in first
    second = _lookup(client, token, site["id"], email, page="2").get_data(as_text=True)
    assert _shown_ids(second) == ids[EXPORT_PAGE_SIZE:]
    assert 'name="page" value="1"' in second and 'name="page" value="3"' not in second
    download = client.post(
        f"/admin/sites/{site['id']}/personal-data/export", data={"email": email, "csrf_token": token}
    )
    assert [c["id"] for c in json.loads(download.get_data(as_text=True))["comments"]] == ids  # every page


@pytest.mark.parametrize("confirm", [None, "", "someone-else@example.org"], ids=["missing", "empty", "other"])
def test_erase_without_the_confirmation_erases_nothing(client: Any, admin: dict[str, Any], confirm: str | None) -> None:
    site = make_ui_site()
    email = _address()
    cid = _comment(site["id"], email)
    token = login(client, admin)
    response = _erase(client, token, site["id"], email, **({} if confirm is None else {"confirm": confirm}))
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Nothing was erased: type the same e-mail address again to confirm." in html
    assert _shown_ids(html) == [cid]  # the lookup stays on the page
    row = _row(cid)
    assert (row.author_name, row.author_email, row.author_ip, row.personal_data_erased_at) == (
        "Ada Lovelace",
        email,
        "203.0.113.9",
        None,
    )


def test_erase_with_the_confirmation_empties_the_authors_data(client: Any, admin: dict[str, Any]) -> None:
    site, other_site = make_ui_site(), make_ui_site()
    email = _address()
    first = _comment(site["id"], email, "Kept text one.")
    second = _comment(site["id"], email.upper(), "Kept text two.")
    bystander = _comment(site["id"], _address(), "Nice post.", name="Grace")
    elsewhere = _comment(other_site["id"], email, "On another blog.")
    token = login(client, admin)
    response = _erase(client, token, site["id"], email, confirm=f" {email.upper()} ")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'erased: <span data-role="erased-count">2</span>' in html
    assert _shown_ids(html) == [] and '<span data-role="count">0</span>' in html  # nothing found any more
    for cid, text in ((first, "Kept text one."), (second, "Kept text two.")):
        row = _row(cid)
        assert [getattr(row, name) for name in PERSONAL] == [""] * len(PERSONAL)
        assert row.meta == {} and row.personal_data_erased_at is not None
        assert row.content == text  # the text stays
    assert _row(bystander).author_name == "Grace" and _row(elsewhere).author_email == email
    again = _erase(client, token, site["id"], email, confirm=email)
    assert 'erased: <span data-role="erased-count">0</span>' in again.get_data(as_text=True)


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["missing", "invalid"])
def test_every_form_needs_a_valid_csrf_token(client: Any, admin: dict[str, Any], token: str | None) -> None:
    site = make_ui_site()
    email = _address()
    cid = _comment(site["id"], email)
    good = login(client, admin)
    base = f"/admin/sites/{site['id']}/personal-data"
    sent = {} if token is None else {"csrf_token": token}
    for path, data in (
        (base, {"email": email}),
        (f"{base}/export", {"email": email}),
        (f"{base}/erase", {"email": email, "confirm": email}),
    ):
        response = client.post(path, data={**data, **sent})
        assert response.status_code == 400, path
        assert b"Ada Lovelace" not in response.data and email.encode() not in response.data
    assert _row(cid).author_email == email  # not erased
    assert _erase(client, good, site["id"], email, confirm=email).status_code == 200  # the same, with the token
    assert _row(cid).author_email == ""


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("", "must be an e-mail address"),  # would find everyone who left no address
        ("   ", "must be an e-mail address"),
        ("Ada Lovelace", "must be an e-mail address"),
        ("a@b.example" + "x" * 320, "must be at most 320 characters long"),
        ("ada\x00@example.org", "must not contain NUL characters"),  # PostgreSQL would refuse it with a 500
    ],
    ids=["empty", "blank", "no-at", "too-long", "nul"],
)
def test_an_invalid_address_is_a_form_error(client: Any, admin: dict[str, Any], email: str, reason: str) -> None:
    site = make_ui_site()
    anonymous = _comment(site["id"], "")  # a comment without an address must never be found or erased
    token = login(client, admin)
    for response in (
        _lookup(client, token, site["id"], email),
        client.post(f"/admin/sites/{site['id']}/personal-data/export", data={"email": email, "csrf_token": token}),
        _erase(client, token, site["id"], email, confirm=email),
    ):
        assert response.status_code == 400 and response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert f"Not an address to look up: it {reason}." in html
        assert 'id="email-error" role="alert"' in html and 'aria-invalid="true"' in html
        assert 'id="found"' not in html and 'id="erase-form"' not in html
    assert _row(anonymous).author_name == "Ada Lovelace"


def test_an_inactive_sites_requests_can_still_be_honoured(client: Any, admin: dict[str, Any]) -> None:
    """Its keys no longer reach the API, so the console is where an admin can still export and erase."""
    site = make_ui_site()
    with session_scope() as session:
        session.execute(update(Site).where(Site.id == site["id"]).values(active=False))
    email = _address()
    cid = _comment(site["id"], email)
    token = login(client, admin)
    page = client.get(f"/admin/sites/{site['id']}/personal-data").get_data(as_text=True)
    assert 'id="inactive-note"' in page and "You can still export and erase here." in page
    assert _shown_ids(_lookup(client, token, site["id"], email).get_data(as_text=True)) == [cid]
    erased = _erase(client, token, site["id"], email, confirm=email)
    assert 'erased: <span data-role="erased-count">1</span>' in erased.get_data(as_text=True)
    assert _row(cid).author_email == ""
