"""The encoder measurement's own arithmetic (the encoder itself is not a test dependency)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.encoder_ceiling import _logit, recipe_train, weighted_sample
from classifiers.normalize import normalize_text
from tests.classifiers.conftest import write_slice

SIZES = {"train": 30, "dev": 5}


def test_logit_keeps_the_order_of_the_surest_comments() -> None:
    p = np.array([0.0, 1e-300, 1e-9, 0.5, 1 - 1e-9, 1 - 1e-15, 1.0])
    z = _logit(p)
    assert np.isfinite(z).all()
    assert (np.diff(z) > 0).all()  # a clip at 1e-6 would tie the last four and the first three
    y = np.array([0, 1, 0, 1, 0, 1, 1])
    assert roc_auc_score(y, z) == roc_auc_score(y, p)


def test_weighted_sample_draws_in_proportion_to_weight() -> None:
    weights = np.array([0.0, 1.0, 3.0])
    drawn = np.bincount(weighted_sample(weights, 40_000, seed=0), minlength=3)
    assert drawn[0] == 0
    assert abs(drawn[2] / drawn[1] - 3.0) < 0.15
    assert (weighted_sample(weights, 100, seed=1) == weighted_sample(weights, 100, seed=1)).all()


def test_the_encoder_trains_on_the_rows_train_model_takes(data_dir: Path, tmp_path: Path) -> None:
    """Each text once: three of jigsaw's train comments are in jigsaw-categories too (as ~500 are in the real files)."""
    for name in (
        "abuse/jigsaw.csv",
        "abuse/jigsaw-categories.csv",
        "abuse/davidson.csv",
        "abuse/convabuse.csv",
        "spam/youtube.csv",
    ):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_slice(data_dir / name, tmp_path / name, SIZES)
    with open(tmp_path / "abuse" / "jigsaw.csv", encoding="utf-8", newline="") as fh:
        shared = [row for row in csv.DictReader(fh) if row["split"] == "train"][:3]
    with open(tmp_path / "abuse" / "jigsaw-categories.csv", "a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(shared[0]))
        writer.writerows({**row, "id": f"again-{row['id']}"} for row in shared)

    train, weights = recipe_train("abuse", tmp_path)
    keys = [normalize_text(c.text) for c in train.comments]
    assert len(keys) == len(set(keys)) == 5 * SIZES["train"] + 3 - 3  # five files' train rows, the copies dropped
    assert set(train.splits) == {"train"} and len(weights) == len(train) and (weights > 0).all()
