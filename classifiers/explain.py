"""Reasons for a score, read off the linear model: contribution of feature j = w_j * x_j.

The n-gram features are hashed, so their text is recovered from the comment itself: each word and
phrase of the (normalised) comment is hashed again and credited with its columns' contributions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.pipeline import Pipeline

from classifiers.fast import (
    MAX_REASONS,
    MIN_CONTRIBUTION,
    hashed_index,
    meta_phrase,
    numeric_contribution,
    numeric_phrase,
    phrase_label,
)
from classifiers.features import NUMERIC_FEATURES, PreparedComment

MAX_WORDS = 300


class Explainer:
    """Turns one transformed row into at most five moderator-readable reasons."""

    def __init__(self, pipeline: Pipeline) -> None:
        features = pipeline.named_steps["features"]
        self._blocks = dict(features.transformer_list)
        clf = pipeline.named_steps["clf"]
        scale = float(clf.calibration_[0])
        self._coef = np.asarray(clf.coef_, dtype=np.float64) * scale
        self._n_word = self._blocks["words"].named_steps["hash"].n_features
        self._n_char = self._blocks["chars"].named_steps["hash"].n_features
        self._n_meta = self._blocks["meta"].named_steps["hash"].n_features
        self._char_off = self._n_word
        self._meta_off = self._n_word + self._n_char
        self._num_off = self._meta_off + self._n_meta

    @cached_property
    def _word_analyzer(self) -> Callable[[str], list[str]]:
        return self._blocks["words"].named_steps["hash"].build_analyzer()

    @cached_property
    def _char_analyzer(self) -> Callable[[str], list[str]]:
        return self._blocks["chars"].named_steps["hash"].build_analyzer()

    def reasons(self, prepared: PreparedComment, row: sp.csr_matrix) -> list[str]:
        contrib = dict(zip(row.indices.tolist(), (row.data * self._coef[row.indices]).tolist(), strict=True))
        scores: dict[str, float] = {}

        def add(phrase: str, value: float) -> None:
            scores[phrase] = scores.get(phrase, 0.0) + value

        self._text_reasons(prepared.text, contrib, add)
        for token in dict.fromkeys(prepared.meta.split()):
            value = contrib.get(self._meta_off + hashed_index(token, self._n_meta), 0.0)
            add(meta_phrase(token), value)
        for j, name in enumerate(NUMERIC_FEATURES):
            value = numeric_contribution(contrib.get(self._num_off + j, 0.0), prepared.numeric[j], j)
            if name == "links":
                if prepared.n_links:
                    add(f"{prepared.n_links} link{'s' if prepared.n_links > 1 else ''}", value)
            elif value:
                add(numeric_phrase(name, prepared.numeric[j]), value)
        ranked = sorted(((v, k) for k, v in scores.items() if v >= MIN_CONTRIBUTION), reverse=True)
        return [k for _, k in ranked[:MAX_REASONS]]

    def _text_reasons(self, text: str, contrib: dict[int, float], add: Callable[[str, float], None]) -> None:
        words = text.split()[:MAX_WORDS]
        if not words:
            return
        # Character n-grams: credit each word with its n-grams' contributions, shared among the words having them.
        per_word_grams = [
            {self._char_off + hashed_index(g, self._n_char) for g in self._char_analyzer(w)} for w in words
        ]
        owners: dict[int, int] = {}
        for grams in per_word_grams:
            for g in grams:
                owners[g] = owners.get(g, 0) + 1
        unit = np.array([sum(contrib.get(g, 0.0) / owners[g] for g in grams) for grams in per_word_grams])
        # Word n-grams: unigrams to their word (first occurrence), bigrams split between their two words.
        analyzer = self._word_analyzer
        tokens_per_word = [analyzer(w) for w in words]
        seen: set[int] = set()
        flat: list[tuple[int, str]] = []
        for i, toks in enumerate(tokens_per_word):
            for t in toks:
                if " " not in t:
                    flat.append((i, t))
        for i, t in flat:
            j = hashed_index(t, self._n_word)
            if j not in seen:
                seen.add(j)
                unit[i] += contrib.get(j, 0.0)
        for (i, a), (k, b) in zip(flat, flat[1:], strict=False):
            j = hashed_index(f"{a} {b}", self._n_word)
            if j not in seen:
                seen.add(j)
                value = contrib.get(j, 0.0)
                unit[i] += value / 2
                unit[k] += value / 2
        # Runs of words that each pushed towards the positive class read as one phrase.
        i = 0
        threshold = MIN_CONTRIBUTION / 2
        while i < len(words):
            if unit[i] < threshold:
                i += 1
                continue
            k = i
            while k + 1 < len(words) and unit[k + 1] >= threshold and k + 1 - i < 4:
                k += 1
            label = phrase_label(words[i : k + 1])
            if label:
                add(label, float(unit[i : k + 1].sum()))
            i = k + 1


def explain_batch(explainer: Explainer, prepared: list[PreparedComment], X: Any) -> list[list[str]]:
    X = sp.csr_matrix(X)
    return [explainer.reasons(prepared[i], X[i]) for i in range(X.shape[0])]
