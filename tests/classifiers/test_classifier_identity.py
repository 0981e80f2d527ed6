"""Identity-group mentions and the unintended-bias metrics reported per group."""

from __future__ import annotations

import numpy as np

from classifiers import CommentInput, Dataset, Thresholds, evaluate
from classifiers.identity import identity_groups
from classifiers.normalize import normalize_text


def test_identity_groups_are_found_in_normalised_text() -> None:
    assert identity_groups(normalize_text("I live with two MUSLIMS.")) == {"religion"}
    assert identity_groups(normalize_text("My manager is a trans woman")) == {"gender identity", "gender"}
    # Spaced letters and leetspeak are folded first.
    assert identity_groups(normalize_text("G.a.y people, w0men")) == {"sexual orientation", "gender"}
    assert identity_groups(normalize_text("Transport and womenswear are not groups.")) == frozenset()
    assert identity_groups("") == frozenset()


class _TableScorer:
    """Scores comments from a table: a model that holds clean comments naming a group (the bias measured)."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def predict_proba(self, comments) -> np.ndarray:
        return np.array([self.table[c.text] for c in comments])


def test_evaluate_reports_unintended_bias_per_identity_group() -> None:
    table = {
        "I live with two Muslims.": 0.60,  # clean, naming a group, scored above two abusive comments: the bias
        "My neighbours are Muslims and very kind.": 0.30,
        "Muslims are vermin and should leave.": 0.90,
        "Thanks for the recipe.": 0.05,
        "Nice photos from the trip.": 0.10,
        "You are a worthless idiot.": 0.50,
        "Shut up, moron.": 0.40,
        "There is a woman on my team.": 0.20,
    }
    labels = [0, 0, 1, 0, 0, 1, 1, 0]
    data = Dataset(
        comments=[CommentInput(text=t) for t in table], labels=np.array(labels), splits=["test"] * 8, sources=["t"] * 8
    )
    result = evaluate(_TableScorer(table), data, Thresholds(0.25, 0.95), by_identity=True)
    religion = result["by_identity"]["religion"]
    assert religion["n"] == 3 and religion["positives"] == 1
    assert religion["roc_auc"] == 1.0  # within the group the abusive comment is first
    # BPSN: the group's two clean comments against the two other abusive ones (0.50, 0.40): 0.60 beats both, 0.30
    # neither, so half of the pairs are ordered wrong.
    assert religion["bpsn_roc_auc"] == 0.5
    assert religion["bnsp_roc_auc"] == 1.0
    assert religion["negatives_mean_probability"] == 0.45 and religion["negatives_not_approved"] == 1.0
    assert result["by_identity"]["gender"]["roc_auc"] is None  # one class only
    assert result["by_identity"]["gender"]["negatives_not_approved"] == 0.0
    none = result["by_identity"]["(none)"]
    assert none["n"] == 4 and none["positives"] == 2 and none["negatives_not_approved"] == 0.0
    assert "by_identity" not in evaluate(_TableScorer(table), data, Thresholds(0.25, 0.95))
