"""What trains each kind's shipped model: one recipe, used by the starter build and by retraining.

Each kind trains on its own training-allowed files with their labels. The spam model also trains on real
discussion comments as negatives: Jigsaw's Wikipedia talk-page comments (training-allowed) are arguments,
thanks and insults, but not ads. Without them the spam model knows legitimate text only as YouTube comments,
SMS and e-mail, and held half of ordinary discussion comments (docs/models.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from classifiers.data import SOURCES, Dataset, load_csv


@dataclass(frozen=True)
class BaseFile:
    path: str  # relative to the shared data directory
    negatives_as: str | None = None  # every row is a negative of this kind, under this source name
    fraction: float = 1.0  # a fixed random share of the rows (all splits), to bound training time
    # False: the e-mail and URL columns mean something else than a commenter's e-mail and website: blanked.
    keep_contact: bool = True

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
        BaseFile("spam/spamassassin.csv", keep_contact=False),
        BaseFile("abuse/jigsaw.csv", negatives_as="jigsaw-discussion", fraction=0.5),
    ),
    "abuse": (
        BaseFile("abuse/jigsaw.csv"),
        BaseFile("abuse/jigsaw-categories.csv"),
        BaseFile("abuse/davidson.csv"),
        BaseFile("abuse/convabuse.csv"),
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
        data = load_csv(data_dir / f.path)
        if not f.keep_contact:
            data.comments = [replace(c, author_email="", author_url="") for c in data.comments]
            data.files = [{**info, "blanked": ["email", "url"]} for info in data.files]
        if f.fraction < 1.0:
            data = data.subset(np.random.default_rng(0).random(len(data)) < f.fraction)
            data.files = [{**info, "fraction": f.fraction} for info in data.files]
        out.append(as_negatives(data, f.negatives_as) if f.negatives_as else data)
    return out
