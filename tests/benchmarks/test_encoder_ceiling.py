"""The encoder measurement's own arithmetic (the encoder itself is not a test dependency)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.encoder_ceiling import _logit, weighted_sample


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
