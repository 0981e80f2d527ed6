"""Which human labels teach which model, the time-ordered holdout, label weights and the schedule's count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from classifiers import CommentInput
from service import retraining
from service.db import session_scope
from service.models import Comment, Label, RetrainRun
from tests.conftest import make_site
from tests.retraining.conftest import add_labelled


def _row(i: int, text: str, y: int, days_ago: float = 0.0, source: str = "moderator") -> retraining.LabelRow:
    return retraining.LabelRow(
        label_id=i,
        comment_id=i,
        site_id=1,
        y=y,
        source=source,
        created_at=datetime.now(UTC) - timedelta(days=days_ago),
        comment=CommentInput(text=text),
    )


def test_only_current_human_labels_of_real_comments_teach(bouncer_env: dict[str, Any]) -> None:
    site = make_site()
    relabelled, abuse, spam = add_labelled(
        site["id"], [("first spam, then ham", "spam"), ("you are an idiot", "abuse"), ("cheap pills", "spam")]
    )
    with session_scope() as db:
        c = db.get(Comment, relabelled)
        assert c is not None
        from service.human_decisions import apply_label

        apply_label(db, c, "ham", source="blog", actor="blog", notify_blog=False)  # supersedes the spam label
        # A test comment with a label row (never made by the app) and an auto-decided comment without one.
        test_c = Comment(site_id=site["id"], content="test comment", is_test=True, status="decided", decision="reject")
        auto_c = Comment(site_id=site["id"], content="auto rejected", status="decided", decision="reject")
        db.add_all([test_c, auto_c])
        db.flush()
        db.add(Label(comment_id=test_c.id, site_id=site["id"], label="spam", source="moderator"))

    with session_scope() as db:
        spam_rows = retraining.collect_labels(db, "spam", [site["id"]])
        abuse_rows = retraining.collect_labels(db, "abuse", [site["id"]])
    assert [(r.comment_id, r.y, r.source) for r in spam_rows] == [(spam, 1, "moderator"), (relabelled, 0, "blog")]
    assert [(r.comment_id, r.y) for r in abuse_rows] == [(abuse, 1), (relabelled, 0)]
    assert spam_rows[0].comment.text == "cheap pills"


def test_holdout_is_the_newest_labels_and_training_never_sees_their_texts() -> None:
    rows = [_row(i, f"comment number {i}", i % 2) for i in range(40)]
    rows.append(_row(40, "comment number 3", 1))  # a repeat of an old text arrives last
    options = retraining.RetrainOptions(holdout_fraction=0.25, min_holdout=5)
    train, holdout = retraining.split_holdout(rows, options)
    assert [r.label_id for r in holdout] == list(range(31, 41))
    assert 3 not in [r.label_id for r in train]  # its text is in the holdout
    assert [r.label_id for r in train] == [i for i in range(31) if i != 3]


def test_too_few_labels_hold_nothing_out() -> None:
    rows = [_row(i, f"text {i}", i % 2) for i in range(15)]
    train, holdout = retraining.split_holdout(rows, retraining.RetrainOptions(min_holdout=10))
    assert (len(train), len(holdout)) == (15, 0)


def test_recent_labels_weigh_more_and_imports_less() -> None:
    options = retraining.RetrainOptions(label_weight=2.0, half_life_days=30, min_recency=0.25)
    rows = [_row(0, "a", 1, 0), _row(1, "b", 1, 30), _row(2, "c", 1, 365), _row(3, "d", 1, 0, source="import")]
    w = retraining.label_weights(rows, options)
    assert w[0] > w[1] > w[2]
    assert abs(w[0] - 2.0) < 1e-3 and abs(w[1] - 1.0) < 1e-3 and abs(w[2] - 0.5) < 1e-9
    assert abs(w[3] - 1.0) < 1e-3


def test_schedule_counts_new_labels_since_the_last_run(bouncer_env: dict[str, Any]) -> None:
    site = make_site()
    with session_scope() as db:
        db.add(RetrainRun(kind="abuse", status="promoted", created_at=datetime.now(UTC)))
    add_labelled(site["id"], [("you absolute moron", "abuse"), ("lovely post", "ham"), ("buy pills", "spam")])
    with session_scope() as db:
        assert retraining.new_labels_since_last_run(db, "abuse") == 2
        assert "abuse" not in retraining.due_kinds(db, min_new_labels=3)
        assert retraining.due_kinds(db, min_new_labels=2)["abuse"] == 2
        assert retraining.due_kinds(db, min_new_labels=0) == {}  # 0 disables the nightly retrain
        db.add(RetrainRun(kind="abuse", status="failed", created_at=datetime.now(UTC)))
    with session_scope() as db:  # a failed run does not reset the count: tomorrow's try still sees the labels
        assert retraining.new_labels_since_last_run(db, "abuse") == 2


def test_the_same_label_from_the_same_source_again_is_no_new_label(bouncer_env: dict[str, Any], client: Any) -> None:
    """A blog repeating its feedback must not refresh the label: it would count as new and join the holdout."""
    site = make_site()
    (spam,) = add_labelled(site["id"], [("cheap pills here", "spam")])  # a moderator's label
    auth = {"Authorization": f"Bearer {site['api_key']}"}
    for _ in range(3):
        answer = client.post(f"/api/v1/comments/{spam}/feedback", json={"label": "spam"}, headers=auth)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    with session_scope() as db:
        rows = db.scalars(select(Label).where(Label.comment_id == spam).order_by(Label.id)).all()
        # the blog's confirmation is a label of its own (another source), but only one: the repeats add nothing
        assert [(r.label, r.source, r.superseded) for r in rows] == [
            ("spam", "moderator", True),
            ("spam", "blog", False),
        ]
        blog_label_at = rows[1].created_at
    answer = client.post(f"/api/v1/comments/{spam}/feedback", json={"label": "ham"}, headers=auth)
    assert answer.status_code == 200
    with session_scope() as db:
        rows = db.scalars(select(Label).where(Label.comment_id == spam).order_by(Label.id)).all()
        assert [(r.label, r.superseded) for r in rows] == [("spam", True), ("spam", True), ("ham", False)]
        assert rows[1].created_at == blog_label_at
