"""Ordinary words of English: what an author name made of keywords is made of.

An author name made of ordinary words ("Cheap Flights", "Norton Support Number", "Great Offers") reads like an ad; a
person's name ("Jane Doe", "Priya Kumar") does not. The model must not learn who an author is (see
``features._author_tokens``), so the name's words are never features; this list only tells whether they are
ordinary words. A word is ordinary when the train splits of the training-allowed files write it in lower case at
least as often as capitalised ("offers", "support"); a word written mostly capitalised is a name ("Jane", "Smith"),
and a word never seen there counts as a name too, so a rare name is never taken for a keyword. Names that are also
ordinary words ("Grace", "Hope", "Will", "White", "Young") are read as words: documented in docs/models.md.

The list is committed (``common_words.txt``) so that features never depend on the data directory;
``python -m classifiers.common_words`` rebuilds it (the tests check that the committed list is the rebuilt one).
"""

from __future__ import annotations

import collections
import functools
import re
from pathlib import Path

import click

from classifiers.base_data import BASE_TRAINING
from classifiers.data import DEFAULT_DATA_DIR, load_csv
from classifiers.normalize import fold_styles

WORDS_FILE = Path(__file__).with_name("common_words.txt")
MIN_COUNT = 3  # lower-case occurrences: fewer says nothing about a word
# The files that train the shipped models (every training-allowed file of the data README), train split only.
LIST_FILES = tuple(sorted({f.path for files in BASE_TRAINING.values() for f in files}))
_LETTERS = re.compile(r"[^\W\d_]+")


def build_common_words(data_dir: Path) -> list[str]:
    """The ordinary words of the training-allowed train splits under ``data_dir``, sorted."""
    lower: collections.Counter[str] = collections.Counter()
    capitalised: collections.Counter[str] = collections.Counter()
    for name in LIST_FILES:
        for comment in load_csv(data_dir / name).split("train").comments:
            for word in _LETTERS.findall(fold_styles(comment.text)):  # names are read folded (features)
                if word.islower():
                    lower[word] += 1
                elif word[0].isupper() and word[1:].islower():
                    capitalised[word.lower()] += 1
    return sorted(w for w, n in lower.items() if len(w) >= 2 and n >= MIN_COUNT and n >= capitalised.get(w, 0))


@functools.cache
def common_words() -> frozenset[str]:
    """The committed list, lower case."""
    return frozenset(WORDS_FILE.read_text(encoding="utf-8").split())


@click.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=DEFAULT_DATA_DIR,
    show_default=True,
)
def main(data_dir: Path) -> None:
    """Rebuild classifiers/common_words.txt from the training-allowed data."""
    words = build_common_words(data_dir)
    WORDS_FILE.write_text("\n".join(words) + "\n", encoding="utf-8")
    click.echo(f"{len(words)} words -> {WORDS_FILE}")


if __name__ == "__main__":
    main()
