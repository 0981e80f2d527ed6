"""Import a site's moderation history (a WordPress export, CSV or JSON Lines) as decided comments with labels.

A new site has years of comments its moderators already judged. Imported, they are training labels like any
moderator's (source ``import``, which a retrain weighs at half a live label, by their own age), and their
authors' approved comments make them trusted authors to the rules. Nothing is scored, checked against the stream,
or sent back to the blog: the blog already knows these decisions.

Every row goes through the native API's validation (``CommentIn``); one invalid row stops the import before
anything is stored, with the file and row named. Importing a file again adds nothing: each row's external id is
a digest of what the row says, so the same comment is recognised, and two copies of a spam on two posts are not
(and an interrupted import is completed by running it again).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session

from classifiers import CommentInput, Dataset
from service.api.schemas import CommentIn
from service.comments import insert_comment
from service.human_decisions import LABEL_TO_DISPOSITION, record_label
from service.models import Comment, CommentStatus, ModerationEvent, Site

SOURCE = "import"
EXTERNAL_ID_PREFIX = "import:"
MAX_ERRORS_SHOWN = 5
CHUNK_ROWS = 500  # rows per transaction: about a second of the database's write lock


class HistoryError(ValueError):
    """The history cannot be imported; the message names each bad row (file and row number)."""


@dataclass
class ImportSummary:
    rows: int = 0
    imported: int = 0
    already_known: int = 0  # imported before (the same row) or sent by the blog with the same external id
    labels: Counter[str] = field(default_factory=Counter)
    without_time: int = 0  # rows whose file gave no readable date: labelled as written at import time

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "already_known": self.already_known,
            "labels": dict(sorted(self.labels.items())),
            "without_time": self.without_time,
        }


def external_id(comment: CommentInput, written: datetime | None) -> str:
    """A stable id of what a row says: who wrote what, where and when."""
    parts = [comment.text, comment.author_name, comment.author_email, comment.author_url, comment.post_url]
    parts.append(written.isoformat() if written else "")
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()
    return EXTERNAL_ID_PREFIX + digest[:40]


def _comment_in(comment: CommentInput, written: datetime | None) -> CommentIn:
    return CommentIn.model_validate(
        {
            "external_id": external_id(comment, written),
            "content": comment.text,
            "author": {
                "name": comment.author_name,
                "email": comment.author_email,
                "url": comment.author_url,
                "ip": comment.ip,
                "user_agent": comment.user_agent,
            },
            "post": {"url": comment.post_url, "title": comment.post_title, "excerpt": comment.post_excerpt},
            "type": comment.type or "comment",
            "lang": comment.lang,
            "created_at": written,
        }
    )


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")


def _positions(data: Dataset) -> list[str]:
    """Where each row comes from, as "<file name>, comment <n>" (n counts the file's comments from 1)."""
    names = [f"{Path(f['path']).name}, comment {n}" for f in data.files for n in range(1, int(f["rows"]) + 1)]
    return names if len(names) == len(data) else [f"comment {i}" for i in range(1, len(data) + 1)]


def validate_history(data: Dataset) -> list[CommentIn]:
    """Every row as the API would take it; ``HistoryError`` naming the bad rows (nothing is stored)."""
    rows: list[CommentIn] = []
    errors: list[str] = []
    for where, comment, written in zip(_positions(data), data.comments, data.times, strict=True):
        try:
            rows.append(_comment_in(comment, written))
        except ValidationError as exc:
            errors.append(f"{where}: {_problem(exc)}")
    if errors:
        more = f"; and {len(errors) - MAX_ERRORS_SHOWN} more rows" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise HistoryError("nothing imported: " + "; ".join(errors[:MAX_ERRORS_SHOWN]) + more)
    return rows


def import_history(
    session: Session, site: Site, data: Dataset, positive: str, actor: str, chunk: int = CHUNK_ROWS
) -> ImportSummary:
    """Store ``data`` as ``site``'s decided comments, each with its label (1 → ``positive``, 0 → ``ham``).

    Every row is validated before any is stored. Then the rows are committed ``chunk`` at a time, so a live site's
    comments keep coming in meanwhile (SQLite has one write lock); an interrupted import is completed by running it
    again, since a row already known (same external id) is left as it is.
    """
    if positive not in ("spam", "abuse"):
        raise ValueError(f"positive must be spam or abuse, not {positive!r}")
    rows = validate_history(data)
    now = datetime.now(UTC)
    summary = ImportSummary(rows=len(rows))
    for n, (row, y, written) in enumerate(zip(rows, data.labels, data.times, strict=True), 1):
        if n % chunk == 0:
            session.commit()
        comment_id, created = insert_comment(session, site.id, row, source=SOURCE)
        if not created:
            summary.already_known += 1
            continue
        label = positive if y == 1 else "ham"
        decision, category = LABEL_TO_DISPOSITION[label]
        at = written or now
        session.execute(
            update(Comment)
            .where(Comment.id == comment_id)
            .values(
                status=CommentStatus.DECIDED,
                decision=decision,
                category=category,
                decided_by=SOURCE,
                decided_at=at,
                moderated_at=at,
                reasons=[f"imported {label} label ({actor})"],
            )
        )
        comment = session.get(Comment, comment_id)
        assert comment is not None
        # The audit log says where the decision came from (the detail page's history), dated like the decision.
        session.add(
            ModerationEvent(
                comment_id=comment_id,
                site_id=site.id,
                actor=SOURCE,
                action=SOURCE,
                to_decision=decision,
                category=category,
                details={"label": label, "source": SOURCE, "by": actor},
                created_at=at,
            )
        )
        record_label(session, comment, label, SOURCE, actor, at=at)  # as old as the decision it records
        summary.imported += 1
        summary.labels[label] += 1
        summary.without_time += written is None
    return summary
