"""Conformance with real Akismet clients, unmodified: PyPI ``akismet`` and npm ``akismet-api``.

Both talk to Bouncer under gunicorn (``live_server``) with a real Celery worker (``worker``) deciding comments; the
results are checked in the database. The Python client keeps its default 1 s timeout, so every answer here also
proves the comment-check budget.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import akismet
import httpx
import pytest
from sqlalchemy import select

from service.db import session_scope
from service.models import Comment, Label, Site
from tests.akismet.harness import BLOG, IP, bouncer_http, python_client
from tests.conftest import make_site

JS_DIR = Path(__file__).resolve().parent / "js"


def configure_site(site_id: int, **values: Any) -> None:
    with session_scope() as session:
        site = session.get(Site, site_id)
        assert site is not None
        for name, value in values.items():
            setattr(site, name, value)


# Thresholds that make the model's answer deterministic whatever the model: everything approves, or everything holds.
APPROVE_ALL = {"spam_approve_below": 1.0, "spam_reject_at": 1.0, "abuse_approve_below": 1.0, "abuse_reject_at": 1.0}
HOLD_ALL = {"spam_approve_below": 0.0, "spam_reject_at": 1.0, "abuse_approve_below": 0.0, "abuse_reject_at": 1.0}


def stored(content: str) -> Comment:
    with session_scope() as session:
        comment = session.scalars(select(Comment).where(Comment.content == content).order_by(Comment.id.desc())).first()
        assert comment is not None, f"no stored comment {content!r}"
        session.expunge(comment)
        return comment


def labels_of(comment_id: int) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(select(Label.label).where(Label.comment_id == comment_id, Label.superseded.is_(False)))
        )


def unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


@pytest.fixture
def akismet_site(live_server: Any, worker: Any) -> Iterator[dict[str, Any]]:
    yield make_site(name="Akismet conformance blog")


@pytest.fixture
def connect(live_server: Any) -> Iterator[Callable[[str], akismet.SyncClient]]:
    """Make PyPI clients for a key, all pointed at the live server; their connections close after the test."""
    made: list[httpx.Client] = []

    def factory(key: str) -> akismet.SyncClient:
        made.append(bouncer_http(live_server.url))
        return python_client(made[-1], key)

    yield factory
    for http in made:
        http.close()


# PyPI akismet --------------------------------------------------------------------------------------------------


def test_python_verify_key(live_server: Any, akismet_site: dict[str, Any], connect: Any) -> None:
    assert connect(akismet_site["akismet_key"]).verify_key() is True
    assert connect("nokeynokeyno").verify_key() is False
    with bouncer_http(live_server.url) as http, pytest.raises(akismet.APIKeyError):
        akismet.SyncClient.validated_client(config=akismet.Config(key="nokeynokeyno", url=BLOG), http_client=http)
    with akismet.SyncClient(
        config=akismet.Config(key=akismet_site["akismet_key"], url=BLOG), http_client=bouncer_http(live_server.url)
    ) as validated:  # the context manager verifies the key on entry, and closes its HTTP client on exit
        assert validated.verify_key() is True


def test_python_comment_check_ham_spam_and_discard(akismet_site: dict[str, Any], connect: Any) -> None:
    client = connect(akismet_site["akismet_key"])
    polite = "Thanks for the write-up; the part about connection pools fixed our timeouts."

    configure_site(akismet_site["id"], **APPROVE_ALL)
    ham = unique(polite)
    assert client.comment_check(IP, comment_content=ham, comment_author="Ada", comment_type="comment") == (
        akismet.CheckResponse.HAM
    )
    assert (stored(ham).decision, stored(ham).decided_by) == ("approve", "worker")

    configure_site(akismet_site["id"], **HOLD_ALL)
    held = unique(polite)
    assert client.comment_check(IP, comment_content=held, comment_author="Ada") == akismet.CheckResponse.SPAM
    assert stored(held).decision == "hold"  # in Bouncer's queue; the blog's spam folder meanwhile

    configure_site(akismet_site["id"], akismet_hold_is_spam=False)
    held_as_ham = unique(polite)
    assert client.comment_check(IP, comment_content=held_as_ham, comment_author="Ada") == akismet.CheckResponse.HAM
    assert stored(held_as_ham).decision == "hold"

    honeypot = unique(polite)
    verdict = client.comment_check(
        IP, comment_content=honeypot, comment_author="Ada", honeypot_field_name="hp"
    )  # the client cannot send the trap field itself (it refuses unknown arguments): an empty trap is no hit
    assert verdict == akismet.CheckResponse.HAM


@pytest.mark.parametrize(
    "hook",
    [{"comment_author": "viagra-test-123"}, {"comment_author_email": "akismet-guaranteed-spam@example.com"}],
)
def test_python_test_hooks_spam(akismet_site: dict[str, Any], connect: Any, hook: akismet.AkismetArguments) -> None:
    configure_site(akismet_site["id"], **APPROVE_ALL)  # the hook must win over a lenient model
    client = connect(akismet_site["akismet_key"])
    content = unique("Great article!")
    arguments: akismet.AkismetArguments = {**hook, "comment_content": content}
    assert client.comment_check(IP, **arguments) == akismet.CheckResponse.DISCARD
    comment = stored(content)
    assert (comment.decision, comment.category) == ("reject", "spam")


def test_python_test_hook_administrator_and_is_test(akismet_site: dict[str, Any], connect: Any) -> None:
    configure_site(akismet_site["id"], **HOLD_ALL)  # the hook must win over a strict model
    client = connect(akismet_site["akismet_key"])
    content = unique("Moderation note: comments close on Friday.")
    verdict = client.comment_check(IP, comment_content=content, user_role="administrator", is_test=True)
    assert verdict == akismet.CheckResponse.HAM
    comment = stored(content)
    assert comment.decision == "approve" and comment.is_test is True and comment.meta["user_role"] == "administrator"
    assert client.submit_spam(IP, comment_content=content, user_role="administrator", is_test=True) is True
    assert stored(content).decision == "reject"
    assert labels_of(comment.id) == []  # is_test: no training effect


def test_python_submit_spam_and_ham_change_the_label(akismet_site: dict[str, Any], connect: Any) -> None:
    configure_site(akismet_site["id"], **APPROVE_ALL)
    client = connect(akismet_site["akismet_key"])
    content = unique("Buy cheap watches at my store")
    fields: akismet.AkismetArguments = {
        "comment_content": content,
        "comment_author": "Seller",
        "comment_author_email": "s@shop.example",
    }
    assert client.comment_check(IP, **fields) == akismet.CheckResponse.HAM
    comment = stored(content)

    assert client.submit_spam(IP, **fields) is True
    assert labels_of(comment.id) == ["spam"]
    assert (stored(content).decision, stored(content).category) == ("reject", "spam")

    assert client.submit_ham(IP, **fields) is True
    assert labels_of(comment.id) == ["ham"]
    assert stored(content).decision == "approve"


def test_python_usage_limit(akismet_site: dict[str, Any], connect: Any) -> None:
    configure_site(akismet_site["id"], **APPROVE_ALL)
    client = connect(akismet_site["akismet_key"])
    client.comment_check(IP, comment_content=unique("counted"))
    usage = client.usage_limit()
    assert usage == {"limit": "none", "usage": 1, "percentage": "0.00", "throttled": False}


def test_comment_check_headers(live_server: Any, akismet_site: dict[str, Any]) -> None:
    configure_site(akismet_site["id"], **APPROVE_ALL)
    form = {
        "api_key": akismet_site["akismet_key"],
        "blog": BLOG,
        "user_ip": IP,
        "comment_author": "viagra-test-123",
        "comment_content": unique("hook"),
        "HTTP_ACCEPT": "text/html",  # WordPress sends its $_SERVER: ignored
        "POST_foo": "bar",
    }
    with httpx.Client(timeout=1.0) as http:
        response = http.post(f"{live_server.url}/1.1/comment-check", data=form)
    assert response.status_code == 200 and response.text == "true"
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["X-akismet-pro-tip"] == "discard"
    assert response.headers["X-akismet-guid"] == str(stored(form["comment_content"]).id)


# npm akismet-api -----------------------------------------------------------------------------------------------


def _node_modules() -> None:
    """Install the locked client once (node_modules is not committed)."""
    npm = shutil.which("npm")
    assert npm, "the npm client tests need node and npm on PATH"
    if not (JS_DIR / "node_modules" / "akismet-api").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=300)


def test_npm_akismet_api(live_server: Any, akismet_site: dict[str, Any]) -> None:
    _node_modules()
    configure_site(akismet_site["id"], **APPROVE_ALL)
    base = {"ip": IP, "useragent": "Mozilla/5.0", "permalink": f"{BLOG}/post/1", "type": "comment"}
    ham, spam, admin, trap, reported = (unique(t) for t in ("Lovely", "Hello", "Note", "Hi", "Cheap pills here"))
    config = {
        "host": f"localhost:{live_server.port}",
        "key": akismet_site["akismet_key"],
        "badKey": "nokeynokeyno",
        "blog": BLOG,
        "cases": {
            "ham": {**base, "content": ham, "name": "Ada", "email": "ada@example.org"},
            "spamHook": {**base, "content": spam, "name": "viagra-test-123"},
            "adminTest": {**base, "content": admin, "role": "administrator", "isTest": True},
            "honeypot": {**base, "content": trap, "name": "Bot", "honeypot": "filled by a bot"},
            "reported": {**base, "content": reported, "name": "Seller"},
        },
        "submitSpam": {**base, "content": reported, "name": "Seller"},
        "submitHam": {**base, "content": ham, "name": "Ada", "email": "ada@example.org"},
    }
    run = subprocess.run(
        ["node", "conformance.js"],
        cwd=JS_DIR,
        env={**os.environ, "AKISMET_TEST": json.dumps(config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)

    assert results["verifyValid"] is True and results["verifyInvalid"] is False
    expected = {"ham": False, "spamHook": True, "adminTest": False, "honeypot": True, "reported": False}
    assert results["checks"] == expected
    assert results["badKeyCheck"] == "Invalid API key"
    thanks = "Thanks for making the web a better place."
    assert results["submitSpam"] == thanks and results["submitHam"] == thanks

    assert stored(ham).meta["blog_lang"] == "en" and stored(ham).post_url == f"{BLOG}/post/1"
    assert stored(trap).honeypot == "filled by a bot" and stored(trap).decision == "reject"
    assert stored(admin).is_test is True
    assert labels_of(stored(reported).id) == ["spam"]
    assert labels_of(stored(ham).id) == ["ham"]
