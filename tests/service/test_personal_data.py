"""A commenter's requests through the blog: export (access) and erase (to be forgotten) their personal data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, update

from service.db import session_scope
from service.models import Comment, Label, erased_email
from service.personal_data import EXPORT_PAGE_SIZE
from tests.conftest import make_site, post_comment

PERSONAL = ("author_name", "author_email", "author_url", "author_ip", "user_agent", "referrer")


def _call(client: Any, site: dict[str, Any], action: str, body: Any) -> Any:
    return client.post(
        f"/api/v1/personal-data/{action}",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"},
    )


def _comment(client: Any, site: dict[str, Any], email: str, text: str, **author: str) -> int:
    body = {
        "content": text,
        "author": {"name": "Ada Lovelace", "email": email, "url": "https://ada.example", "ip": "203.0.113.9",
                   "user_agent": "Mozilla/5.0 (Ada)", **author},
        "referrer": "https://blog.example/post-1",
        "meta": {"wp_user_id": 17},
    }  # fmt: skip
    response = post_comment(client, site["api_key"], body, wait=0)
    assert response.status_code in (200, 202), response.get_json()
    return int(response.get_json()["id"])


def _row(comment_id: int) -> Comment:
    with session_scope() as session:
        comment = session.get(Comment, comment_id)
        assert comment is not None
        session.expunge(comment)
        return comment


def test_export_shows_the_commenters_data_and_erase_removes_it_from_their_comments_only(client: Any) -> None:
    site, other_site = make_site(name="Ada's blog"), make_site(name="Another blog")
    first = _comment(client, site, "Ada@Example.org", "Thanks, the part about pruning helped.")
    second = _comment(client, site, "ada@example.ORG", "One more question about roses.")
    bystander = _comment(client, site, "grace@example.org", "Nice post.", name="Grace")
    elsewhere = _comment(client, other_site, "ada@example.org", "Hello from another blog.")
    with session_scope() as session:  # a moderator's label: training data that must stay
        session.add(Label(comment_id=first, site_id=site["id"], label="ham", source="moderator", actor="user:1"))

    exported = _call(client, site, "export", {"email": "  ADA@example.org "})
    assert exported.status_code == 200
    page = exported.get_json()
    assert page["done"] is True
    assert [c["id"] for c in page["comments"]] == [first, second]  # this site's only, oldest first, any case
    assert page["comments"][0]["content"] == "Thanks, the part about pruning helped."
    assert page["comments"][0]["author"] == {
        "name": "Ada Lovelace",
        "email": "Ada@Example.org",
        "url": "https://ada.example",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (Ada)",
    }
    assert page["comments"][0]["meta"] == {"wp_user_id": 17}
    assert page["comments"][0]["personal_data_erased_at"] is None

    erased = _call(client, site, "erase", {"email": "ada@example.org"})
    assert (erased.status_code, erased.get_json()) == (200, {"erased": 2})
    for cid in (first, second):
        row = _row(cid)
        assert [getattr(row, name) for name in PERSONAL] == [""] * len(PERSONAL)
        assert row.meta == {} and row.personal_data_erased_at is not None
    assert _row(first).content == "Thanks, the part about pruning helped."  # the text and the label stay
    with session_scope() as session:
        assert session.scalars(select(Label.label).where(Label.comment_id == first)).all() == ["ham"]
    assert _row(bystander).author_email == "grace@example.org" and _row(bystander).author_name == "Grace"
    assert _row(elsewhere).author_email == "ada@example.org"  # another site's comments are that site's business

    again = _call(client, site, "erase", {"email": "ada@example.org"})
    assert again.get_json() == {"erased": 0}  # nothing left to erase
    assert _call(client, site, "export", {"email": "ada@example.org"}).get_json() == {"comments": [], "done": True}
    status = client.get(f"/api/v1/comments/{first}", headers={"Authorization": f"Bearer {site['api_key']}"})
    assert status.status_code == 200  # the comment itself stays


def test_an_address_the_retention_purge_pseudonymised_is_still_found_and_erased(client: Any) -> None:
    site = make_site()
    old = _comment(client, site, "bob@example.net", "An old comment.")
    with session_scope() as session:  # as the purge leaves it after BOUNCER_RETAIN_PERSONAL_DATA_DAYS
        session.execute(
            update(Comment).where(Comment.id == old).values(author_email=erased_email("bob@example.net"), author_ip="")
        )
    page = _call(client, site, "export", {"email": "Bob@Example.net"}).get_json()
    assert [c["id"] for c in page["comments"]] == [old]
    assert page["comments"][0]["author"]["email"].startswith("erased-")
    assert _call(client, site, "erase", {"email": "bob@example.net"}).get_json() == {"erased": 1}
    assert (_row(old).author_email, _row(old).author_name) == ("", "")


def test_export_pages_through_many_comments(client: Any) -> None:
    site = make_site()
    with session_scope() as session:
        rows = [
            Comment(site_id=site["id"], content=f"comment {i}", author_email="many@example.org", status="decided")
            for i in range(EXPORT_PAGE_SIZE + 3)
        ]
        session.add_all(rows)
        session.flush()
        ids = sorted(c.id for c in rows)
    first = _call(client, site, "export", {"email": "many@example.org"}).get_json()
    second = _call(client, site, "export", {"email": "many@example.org", "page": 2}).get_json()
    assert (len(first["comments"]), first["done"]) == (EXPORT_PAGE_SIZE, False)
    assert (len(second["comments"]), second["done"]) == (3, True)
    assert [c["id"] for c in first["comments"] + second["comments"]] == ids
    assert _call(client, site, "export", {"email": "many@example.org", "page": 3}).get_json()["comments"] == []


@pytest.mark.parametrize(
    ("action", "body", "code", "field"),
    [
        ("erase", {}, "missing_field", "email"),
        ("erase", {"email": ""}, "invalid_field", "email"),  # would match everyone who left no address
        ("erase", {"email": "   "}, "invalid_field", "email"),
        ("erase", {"email": "Ada Lovelace"}, "invalid_field", "email"),
        ("erase", {"email": 12}, "invalid_field", "email"),
        ("erase", {"email": "a@b.example", "page": 1}, "unknown_field", "page"),
        ("erase", {"email": "a@b.example" + "x" * 320}, "invalid_field", "email"),
        ("export", {"email": "a@b.example", "page": 0}, "invalid_field", "page"),
        ("export", {"email": "a@b.example", "page": "2"}, "invalid_field", "page"),
        ("export", {"email": "a@b.example", "page": True}, "invalid_field", "page"),
    ],
)
def test_requests_are_validated(
    client: Any, site: dict[str, Any], action: str, body: Any, code: str, field: str
) -> None:
    response = _call(client, site, action, body)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == code and response.get_json()["error"]["field"] == field


def test_requests_need_the_sites_key(client: Any, site: dict[str, Any]) -> None:
    for action in ("export", "erase"):
        response = client.post(f"/api/v1/personal-data/{action}", json={"email": "a@b.example"})
        assert response.status_code == 401
        bad = client.post(
            f"/api/v1/personal-data/{action}",
            json={"email": "a@b.example"},
            headers={"Authorization": "Bearer bk_not-a-key"},
        )
        assert bad.status_code == 401
    wrong_type = client.post(
        "/api/v1/personal-data/erase",
        data="email=a@b.example",
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert wrong_type.status_code == 415


def test_cli_exports_and_erases(client: Any, runner: Any) -> None:
    from service.cli import main

    site = make_site()
    cid = _comment(client, site, "cli@example.org", "From the command line.")
    exported = runner.invoke(main, ["personal-data", "export", "--site", str(site["id"]), "--email", "CLI@example.org"])
    assert exported.exit_code == 0, exported.output
    assert [json.loads(line)["id"] for line in exported.output.splitlines()] == [cid]
    erased = runner.invoke(main, ["personal-data", "erase", "--site", str(site["id"]), "--email", "cli@example.org"])
    assert (erased.exit_code, json.loads(erased.output)) == (0, {"site": site["id"], "erased": 1})
    assert _row(cid).author_email == ""
    bad = runner.invoke(main, ["personal-data", "erase", "--site", str(site["id"]), "--email", "nobody"])
    assert bad.exit_code == 2 and "must be an e-mail address" in bad.output
    missing = runner.invoke(main, ["personal-data", "erase", "--site", "999999999", "--email", "a@b.example"])
    assert missing.exit_code == 1 and "no site with id 999999999" in missing.output


def test_the_stream_checks_forget_an_erased_author(client: Any) -> None:
    """The first-sight marker of an address lives for 90 days in Redis; once its author is erased, their next
    comment is a first comment from that address again."""
    from service.api.schemas import CommentIn
    from service.comments import insert_comment
    from service.decisions.engine import decide_pending

    first_sight = "first comment from this e-mail address on this site"
    site = make_site()

    def reasons_of_a_new_comment(text: str) -> list[str]:
        # Stored without enqueueing: the session's worker, scoring a copy late, would record the address again.
        comment = CommentIn.model_validate({"content": text, "author": {"email": "Fresh+blog@example.org"}})
        with session_scope() as session:
            cid, _created = insert_comment(session, site["id"], comment)
        with session_scope() as session:
            decide_pending(session, [cid], decided_by="worker")
        return list(_row(cid).reasons or [])

    assert any(first_sight in r for r in reasons_of_a_new_comment("My first comment here, about the roses."))
    assert not any(first_sight in r for r in reasons_of_a_new_comment("And a second one, about the tulips."))
    assert _call(client, site, "erase", {"email": "fresh+blog@example.org"}).get_json() == {"erased": 2}
    assert any(first_sight in r for r in reasons_of_a_new_comment("Back again, about the lilies."))
