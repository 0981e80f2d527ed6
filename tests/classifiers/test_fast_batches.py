"""FastScorer's batch machinery: the batch two models share, bounded caches, the vectorised helpers."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers import CommentInput, fast
from classifiers.fast import FastScorer, _IntMap, _sum_by_key
from classifiers.features import PreparedComment, _prepare, prepare_many

COMMENTS = [
    CommentInput(text="Check out my channel!! subscribe http://bit.ly/x please subscribe to my channel"),
    CommentInput(text="I love this song, the chorus is great. great great song"),
    CommentInput(text=""),
    CommentInput(text="you are a stupid fucking idiot, you idiot", author_name="Troll 99"),
    CommentInput(text="it's dogs' toys' rock'n'roll — don't — don't"),
    CommentInput(text="FR33 V1AGRA now!!!! Сheap viаgra f r e e money c@sh", author_email="x@mailinator.com"),
    CommentInput(text="Привет мир, こんにちは 世界 🎉 " * 3),
]


def _fresh() -> list[PreparedComment]:
    """Prepared comments equal to ``prepare_many(COMMENTS)`` but new objects (no batch to reuse)."""
    return [_prepare(c) for c in COMMENTS]


def _same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.reasons == y.reasons
        assert x.probability == pytest.approx(y.probability, abs=1e-12)
        assert list(x.categories) == list(y.categories)
        np.testing.assert_allclose(list(x.categories.values()), list(y.categories.values()), atol=1e-4)


def test_the_second_model_reuses_the_batch(spam_model, abuse_model) -> None:
    spam, abuse = FastScorer(spam_model[0]), FastScorer(abuse_model[0])
    expected = {m: (m.predict_proba(_fresh()), m.score(_fresh())) for m in (spam, abuse)}
    prepared = prepare_many(COMMENTS)
    _same(spam.score(prepared), expected[spam][1])
    batch = spam.hasher.last_batch
    np.testing.assert_allclose(abuse.predict_proba(prepared), expected[abuse][0], rtol=0, atol=1e-12)
    _same(abuse.score(prepared), expected[abuse][1])
    assert abuse.hasher.last_batch is batch  # reasons and probabilities both read the first model's batch
    # a probabilities-only batch has nothing for reasons: the next score builds its own
    again = _fresh()
    np.testing.assert_allclose(spam.predict_proba(again), expected[spam][0], rtol=0, atol=1e-12)
    _same(abuse.score(again), expected[abuse][1])
    last = abuse.hasher.last_batch
    assert last is not None and last is not batch and last.explain


def test_caches_stay_bounded(spam_model, monkeypatch) -> None:
    pipeline = spam_model[0]
    scorer = FastScorer(pipeline)
    expected = pipeline.predict_proba(COMMENTS)[:, 1]
    monkeypatch.setattr(fast, "CACHE_SIZE", 8)
    for _ in range(3):
        for i in range(len(COMMENTS)):  # batches of two: a new batch finds full caches
            got = scorer.predict_proba(_fresh()[i : i + 2])
            np.testing.assert_allclose(got, expected[i : i + 2], rtol=0, atol=1e-6)
        vocab = scorer.hasher._vocab
        assert len(vocab.word_ids) < 8 + 40 and vocab.bigrams.size < 8 + 40


def test_int_map_matches_a_dict() -> None:
    rng = np.random.default_rng(0)
    table, reference = _IntMap(), dict[int, int]()
    for size in (1, 3000, 10, 5000, 0, 20000):
        keys = rng.integers(0, 2**62, size)
        keys[: size // 3] = rng.integers(0, 50, size // 3)  # small keys and repeats too
        got = table.get(keys)
        assert got.tolist() == [reference.get(k, -1) for k in keys.tolist()]
        new = np.unique(keys[got < 0])
        values = rng.integers(0, 2**18, len(new))
        table.insert(new, values)
        reference.update(zip(new.tolist(), values.tolist(), strict=True))
        assert table.size == len(reference)
    assert table.get(np.asarray(list(reference))).tolist() == list(reference.values())


@pytest.mark.parametrize(("largest", "key_bits"), [(None, 22), (3, 22), (5000, 22), (5000, 60)])
def test_sum_by_key_matches_unique(largest: int | None, key_bits: int) -> None:
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**22, 5000) // 97
    counts = None if largest is None else rng.integers(1, largest + 1, len(keys))
    distinct, sums = _sum_by_key(keys, counts, key_bits)  # 60 bits leave too few to pack the counts
    expected, inverse = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(distinct, expected)
    np.testing.assert_array_equal(sums, np.bincount(inverse, weights=counts).astype(np.int64))
    empty = _sum_by_key(keys[:0], None, 22)
    assert len(empty[0]) == len(empty[1]) == 0
