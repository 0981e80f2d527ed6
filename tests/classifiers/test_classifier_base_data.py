"""The base-training recipe shared by the starter build and retraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifiers import base_data
from classifiers.base_data import BASE_TRAINING, BaseFile, load_base_training
from classifiers.comment import CommentInput
from classifiers.data import SOURCES


def test_every_recipe_file_may_train_a_shipped_model() -> None:
    for kind, files in BASE_TRAINING.items():
        for f in files:
            assert SOURCES[f.stem]["train_allowed"], f"{kind}: {f.path}"


def test_spam_recipe_adds_discussion_comments_as_negatives(data_dir: Path) -> None:
    datasets = load_base_training("spam", data_dir)
    discussion = next(d for d in datasets if d.sources and d.sources[0] == "jigsaw-discussion")
    assert len(discussion) > 1000 and not discussion.labels.any()
    assert not discussion.categories and set(discussion.sublabels) == {""}
    assert discussion.files[0]["used_as"] == "negatives (jigsaw-discussion)"
    assert discussion.files[0]["fraction"] == 0.5
    assert {"train", "dev", "test"} <= set(discussion.splits)  # the file's own splits are kept
    again = load_base_training("spam", data_dir)
    same = next(d for d in again if d.sources[0] == "jigsaw-discussion")
    assert [c.text for c in same.comments] == [c.text for c in discussion.comments]  # a fixed sample
    spam_files = [d for d in datasets if d.sources[0] != "jigsaw-discussion"]
    assert all(d.labels.any() and not d.labels.all() for d in spam_files)


def test_abuse_recipe_adds_youtube_comments_as_text_only_train_negatives(data_dir: Path) -> None:
    """Casual comments teach the abuse model ordinary text; only their words train, and only their train rows."""
    datasets = load_base_training("abuse", data_dir)
    youtube = next(d for d in datasets if d.sources and d.sources[0] == "youtube-comments")
    assert len(youtube) > 1000 and not youtube.labels.any()
    assert set(youtube.splits) == {"train"}  # its dev rows do not choose the abuse thresholds
    assert all(c == CommentInput(text=c.text) for c in youtube.comments)  # no author name reads as "not abusive"
    assert youtube.files[0]["splits"] == ["train"] and set(youtube.files[0]["blanked"]) == set(base_data.METADATA)
    from classifiers.data import load_csv

    raw = load_csv(data_dir / "spam" / "youtube.csv", "train")
    assert [c.text for c in raw.comments] == [c.text for c in youtube.comments]
    assert all(c.author_name for c in raw.comments)  # the file itself names every author
    abuse_files = [d for d in datasets if d.sources[0] != "youtube-comments"]
    assert all(d.labels.any() and {"train", "dev", "test"} <= set(d.splits) for d in abuse_files)


def test_recipe_refuses_an_evaluation_only_file(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base_data.BASE_TRAINING, "spam", (BaseFile("spam/youtube-extra.csv"),))
    with pytest.raises(ValueError, match="may not train a shipped model"):
        load_base_training("spam", data_dir)


def test_as_negatives_keeps_comments_and_splits(data_dir: Path) -> None:
    from classifiers.data import load_csv

    data = load_csv(data_dir / "abuse" / "convabuse.csv")
    neg = base_data.as_negatives(data, "chat")
    assert len(neg) == len(data) and np.array_equal(neg.labels, np.zeros(len(data)))
    assert neg.splits == data.splits and set(neg.sources) == {"chat"}
    assert neg.comments[0] is data.comments[0]


def test_spam_recipe_blanks_the_contact_columns_of_e_mail(data_dir: Path) -> None:
    """SpamAssassin's sender address and first body link are not a commenter's e-mail and website."""
    datasets = {d.sources[0]: d for d in load_base_training("spam", data_dir)}
    mail = datasets["spamassassin"]
    assert not any(c.author_email or c.author_url for c in mail.comments)
    assert any(c.author_name for c in mail.comments)  # the sender's name is kept: names read alike everywhere
    assert mail.files[0]["blanked"] == ["author_email", "author_url"]
    from classifiers.data import load_csv

    raw = load_csv(data_dir / "spam" / "spamassassin.csv")
    assert sum(bool(c.author_email) for c in raw.comments) > 5000  # the file itself has them
    assert [c.text for c in raw.comments] == [c.text for c in mail.comments]
