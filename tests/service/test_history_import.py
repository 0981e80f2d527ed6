"""``bouncer labels import``: a site's moderation history becomes decided comments with labels, in one process per
command as an operator runs it, against the test session's database (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from service.db import session_scope
from service.models import Comment, Label, ModerationEvent
from service.retraining import collect_labels
from tests.classifiers.test_classifier_data_cli import WXR
from tests.conftest import REPO, make_site


def bouncer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO,
        env=dict(os.environ),  # the test session's database and Redis (bouncer_env)
        capture_output=True,
        text=True,
        timeout=120,
    )


def _counts(site_id: int) -> tuple[int, int]:
    with session_scope() as session:
        comments = session.scalar(select(func.count()).select_from(Comment).where(Comment.site_id == site_id))
        labels = session.scalar(select(func.count()).select_from(Label).where(Label.site_id == site_id))
        return int(comments or 0), int(labels or 0)


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def test_a_wordpress_export_becomes_decided_comments_with_labels(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    site = make_site()
    export = tmp_path / "export.xml"
    export.write_text(WXR, encoding="utf-8")

    result = bouncer("labels", "import", "--site", str(site["id"]), str(export))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # pending and trashed comments of the export are no decisions: skipped
    assert {k: summary[k] for k in ("rows", "imported", "already_known", "labels", "without_time")} == {
        "rows": 2,
        "imported": 2,
        "already_known": 0,
        "labels": {"ham": 1, "spam": 1},
        "without_time": 0,
    }
    with session_scope() as session:
        rows = session.scalars(select(Comment).where(Comment.site_id == site["id"]).order_by(Comment.id)).all()
        got = [(c.content, c.status, c.decision, c.category, c.decided_by, c.source) for c in rows]
        assert got == [
            ("Lovely crumb, thanks!", "decided", "approve", None, "import", "import"),
            ("Best deals http://cheap.xyz", "decided", "reject", "spam", "import", "import"),
        ]
        anna = rows[0]
        assert (anna.author_name, anna.author_email, anna.author_ip, anna.post_title) == (
            "Anna",
            "anna@example.org",
            "192.0.2.1",
            "Sourdough at home",
        )
        # the comment's own time (GMT), and the site-local one where the export has no GMT date
        assert [_aware(c.created_at) for c in rows] == [
            datetime(2024, 3, 1, 14, 0, tzinfo=UTC),
            datetime(2024, 3, 1, 13, 0, 20, tzinfo=UTC),
        ]
        assert all(c.spam_score is None and c.enqueue_count == 0 for c in rows)  # never scored, never queued
        events = session.scalars(
            select(ModerationEvent).where(ModerationEvent.site_id == site["id"]).order_by(ModerationEvent.id)
        ).all()
        assert [(e.actor, e.action, e.to_decision, e.category, _aware(e.created_at)) for e in events] == [
            ("import", "import", "approve", None, datetime(2024, 3, 1, 14, 0, tzinfo=UTC)),
            ("import", "import", "reject", "spam", datetime(2024, 3, 1, 13, 0, 20, tzinfo=UTC)),
        ]

        # They teach the spam model like a moderator's labels, at the age of the decision they record.
        labels = collect_labels(session, "spam", site_ids=[site["id"]])
        assert [(r.y, r.source, r.comment.text) for r in labels] == [
            (1, "import", "Best deals http://cheap.xyz"),
            (0, "import", "Lovely crumb, thanks!"),
        ]
        assert labels[0].created_at == datetime(2024, 3, 1, 13, 0, 20, tzinfo=UTC)
        # ham teaches the abuse model too; spam says nothing about abuse
        assert [r.comment.text for r in collect_labels(session, "abuse", site_ids=[site["id"]])] == [
            "Lovely crumb, thanks!"
        ]

    again = bouncer("labels", "import", "--site", str(site["id"]), str(export))
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["imported"], json.loads(again.stdout)["already_known"]) == (0, 2)
    assert _counts(site["id"]) == (2, 2)  # importing a file again adds nothing


def test_an_abuse_history_in_json_lines(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    site = make_site()
    path = tmp_path / "history.jsonl"
    rows: list[dict[str, Any]] = [
        {"content": "You are a worthless idiot", "label": 1, "created_at": "2025-01-02T10:00:00Z"},
        {"content": "Good point about the bridge", "label": 0, "author": {"name": "Sam"}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    result = bouncer("labels", "import", "--site", str(site["id"]), "--positive", "abuse", str(path))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["labels"], summary["without_time"]) == ({"abuse": 1, "ham": 1}, 1)
    with session_scope() as session:
        labels = collect_labels(session, "abuse", site_ids=[site["id"]])
        assert [(r.y, r.comment.text) for r in labels] == [
            (1, "You are a worthless idiot"),
            (0, "Good point about the bridge"),  # no date: labelled as written at import time, so the newest
        ]
        assert collect_labels(session, "spam", site_ids=[site["id"]])[0].comment.text == "Good point about the bridge"
        rejected = session.scalars(select(Comment).where(Comment.site_id == site["id"], Comment.category == "abuse"))
        assert [c.decision for c in rejected] == ["reject"]


def test_a_bad_row_or_file_imports_nothing_and_says_where(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    site = make_site()
    good = tmp_path / "good.xml"
    good.write_text(WXR, encoding="utf-8")
    hostile = tmp_path / "hostile.jsonl"
    rows: list[dict[str, Any]] = [
        {"content": "fine", "label": 0},
        {"content": "x" * 40_000, "label": 1},
        {"content": "nul \u0000 byte", "label": 1},
        {"content": "bad ip", "label": 1, "author": {"ip": "999.1.1.1"}},
    ]
    hostile.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    # the good file first: all files or nothing
    result = bouncer("labels", "import", "--site", str(site["id"]), str(good), str(hostile))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip()
    assert message.startswith("Error: nothing imported: hostile.jsonl, comment 2: content: String should have at most")
    assert "; hostile.jsonl, comment 3: content: Value error, must not contain NUL characters" in message
    assert "; hostile.jsonl, comment 4: author.ip: Value error, not an IPv4 or IPv6 address" in message
    assert _counts(site["id"]) == (0, 0)

    broken = tmp_path / "broken.xml"
    broken.write_text(WXR.replace("</item>", ""), encoding="utf-8")
    result = bouncer("labels", "import", "--site", str(site["id"]), str(broken))
    assert result.returncode == 1 and "not well-formed XML" in result.stderr and "Traceback" not in result.stderr
    result = bouncer("labels", "import", "--site", "999999", str(good))
    assert result.returncode == 1 and result.stderr.strip() == "Error: no site with id 999999"
    assert _counts(site["id"]) == (0, 0)


def test_rows_are_committed_a_chunk_at_a_time(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    """A long import holds the write lock a chunk at a time; a second run completes what the first did not."""
    from classifiers import load_jsonl
    from service.history_import import import_history
    from service.models import Site

    site = make_site()
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(json.dumps({"content": f"comment {i}", "label": i % 2}) for i in range(7)), "utf-8")
    data = load_jsonl(path)
    with session_scope() as session:
        stored = session.get(Site, site["id"])
        assert stored is not None
        first = import_history(session, stored, data.subset([i < 5 for i in range(7)]), "spam", "test", chunk=2)
    assert (first.imported, _counts(site["id"])) == (5, (5, 5))
    with session_scope() as session:
        stored = session.get(Site, site["id"])
        assert stored is not None
        second = import_history(session, stored, data, "spam", "test", chunk=2)
    assert (second.imported, second.already_known, _counts(site["id"])) == (2, 5, (7, 7))
