"""What trains each kind's shipped model: one recipe, used by the starter build and by retraining.

Each kind trains on its own training-allowed files with their labels, and on the other kind's comments as
negatives where those are ordinary text of a kind it did not know:
- spam: Jigsaw's Wikipedia talk-page comments (training-allowed) are arguments, thanks and insults, but not ads.
  Without them the spam model knows legitimate text only as YouTube comments, SMS and e-mail, and held half of
  ordinary discussion comments.
- abuse: YouTube comments (training-allowed) are short, casual remarks ("Cutie girl and beautiful song", "It's
  been back for quite a while now"). The abuse sources' clean text is talk-page discussion, tweets and messages
  to chatbots, and the abuse model held two thirds of the YouTube comments of videos it never saw.
docs/models.md has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.comment import CommentInput
from classifiers.data import SOURCES, Dataset, load_csv

# Every field of a comment but its text (BaseFile.blank).
METADATA = tuple(f.name for f in fields(CommentInput) if f.name != "text")
_EMPTY: dict[str, Any] = {f.name: f.default for f in fields(CommentInput) if f.name != "text"}


@dataclass(frozen=True)
class BaseFile:
    path: str  # relative to the shared data directory
    negatives_as: str | None = None  # every row is a negative of this kind, under this source name
    fraction: float = 1.0  # a fixed random share of the rows (all splits), to bound training time
    # Comment fields emptied before training: those that mean something else in this file than a blog commenter's,
    # or that only this file's rows have (a borrowed file's author names would read as "not abusive" by themselves).
    blank: tuple[str, ...] = ()
    # Only the train split is used: the file's dev and test rows neither choose thresholds nor count in the metrics.
    train_only: bool = False

    @property
    def stem(self) -> str:
        return Path(self.path).stem


BASE_TRAINING: dict[str, tuple[BaseFile, ...]] = {
    "spam": (
        BaseFile("spam/youtube.csv"),
        BaseFile("spam/sms.csv"),
        # An e-mail's sender address and the first link in its body are not a commenter's e-mail and website:
        # learnt from e-mail, "free-mail address" weighed +3.4 logits towards spam (mailing-list ham comes from
        # company and university addresses) and "author gives a website" -1.2, so an ordinary blog comment from a
        # Gmail address went from 0.004 to 0.14 (held). Blanked, these features stay neutral until a site's own
        # labels teach them.
        BaseFile("spam/spamassassin.csv", blank=("author_email", "author_url")),
        BaseFile("abuse/jigsaw.csv", negatives_as="jigsaw-discussion", fraction=0.5),
    ),
    "abuse": (
        BaseFile("abuse/jigsaw.csv"),
        BaseFile("abuse/jigsaw-categories.csv"),
        BaseFile("abuse/davidson.csv"),
        BaseFile("abuse/convabuse.csv"),
        # Train rows only: some YouTube comments swear ("LOL this shit never gets old"), which the abuse sources label
        # abusive; as a ham source their dev rows would set the reject edge near 1.0.
        BaseFile("spam/youtube.csv", negatives_as="youtube-comments", blank=METADATA, train_only=True),
    ),
}


def as_negatives(data: Dataset, source: str) -> Dataset:
    """The same comments, splits and file record, every one a negative, under ``source``."""
    return Dataset(
        comments=data.comments,
        labels=np.zeros(len(data), dtype=np.int64),
        splits=data.splits,
        sources=[source] * len(data),
        groups=data.groups,
        files=[{**f, "used_as": f"negatives ({source})"} for f in data.files],
    )


def load_base_training(kind: str, data_dir: Path) -> list[Dataset]:
    """The datasets of ``kind``'s recipe, from ``data_dir``; refuses a file the data README does not allow."""
    out = []
    for f in BASE_TRAINING[kind]:
        if not SOURCES.get(f.stem, {}).get("train_allowed"):
            raise ValueError(f"{f.path} may not train a shipped model")
        data = load_csv(data_dir / f.path, "train" if f.train_only else None)
        if f.train_only:
            data.files = [{**info, "splits": ["train"]} for info in data.files]
        if f.blank:
            empty = {name: _EMPTY[name] for name in f.blank}
            data.comments = [replace(c, **empty) for c in data.comments]
            data.files = [{**info, "blanked": list(f.blank)} for info in data.files]
        if f.fraction < 1.0:
            data = data.subset(np.random.default_rng(0).random(len(data)) < f.fraction)
            data.files = [{**info, "fraction": f.fraction} for info in data.files]
        out.append(as_negatives(data, f.negatives_as) if f.negatives_as else data)
    return out
