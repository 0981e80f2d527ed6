"""Fixtures: tiny models trained on small slices of the shared data (tests/conftest.py: ``data_dir``)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from classifiers import Dataset, load_csv, train_model


def take(data: Dataset, per_split: dict[str, int]) -> Dataset:
    """The first rows of each split (deterministic)."""
    keep = [False] * len(data)
    counts = dict.fromkeys(per_split, 0)
    for i, s in enumerate(data.splits):
        if s in counts and counts[s] < per_split[s]:
            counts[s] += 1
            keep[i] = True
    return data.subset(keep)


def write_slice(src: Path, dst: Path, per_split: dict[str, int]) -> Path:
    """Copy the first rows of each split of a shared CSV file into ``dst`` (same schema)."""
    with open(src, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows, counts = [], dict.fromkeys(per_split, 0)
        for row in reader:
            if row["split"] in counts and counts[row["split"]] < per_split[row["split"]]:
                counts[row["split"]] += 1
                rows.append(row)
        fields = reader.fieldnames
    assert fields is not None
    with open(dst, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return dst


@pytest.fixture(scope="session")
def slicer():
    """Helpers to cut small deterministic slices: ``slicer.take(dataset, sizes)``, ``slicer.write(src, dst, sizes)``."""

    class Slicer:
        take = staticmethod(take)
        write = staticmethod(write_slice)

    return Slicer


SMALL = {"train": 300, "dev": 80, "test": 80}


@pytest.fixture(scope="session")
def small_spam(data_dir: Path) -> list[Dataset]:
    return [take(load_csv(data_dir / "spam" / f), SMALL) for f in ("youtube.csv", "sms.csv")]


@pytest.fixture(scope="session")
def spam_model(small_spam: list[Dataset]):
    return train_model("spam", small_spam)


@pytest.fixture(scope="session")
def abuse_model(data_dir: Path):
    sizes = {"train": 400, "dev": 100, "test": 50}
    parts = [take(load_csv(data_dir / "abuse" / f), sizes) for f in ("jigsaw-categories.csv", "davidson.csv")]
    return train_model("abuse", parts)
