"""FastScorer (LoadedModel's scoring path) against the sklearn pipeline it reads, and its explanations."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from classifiers import CommentInput
from classifiers.fast import FastScorer
from classifiers.features import prepare_comment, prepare_many
from classifiers.registry import LoadedModel

COMMENTS = [
    CommentInput(text="Check out my channel!! subscribe http://bit.ly/x http://bit.ly/y http://spam.xyz/z"),
    CommentInput(text="I love this song, the chorus is great. great great song"),
    CommentInput(text=""),
    CommentInput(text="   \n\t "),
    CommentInput(text="\u202e\u200b🙂" * 2000),
    CommentInput(text="FR33 V1AGRA now!!!! Сheap viаgra f r e e money c@sh"),
    CommentInput(text="a" * 20_000 + " b" * 3000),
    CommentInput(text="Привет мир, こんにちは 世界 🎉, مرحبا بالعالم"),
    CommentInput(
        text="Call +1 (800) 555-0199 for Norton support",
        author_name="Norton Support Number 24x7",
        author_email="x@mailinator.com",
        author_url="http://spam.top",
        honeypot=True,
        seconds_since_post=12,
        post_title="Baking sourdough bread at home",
    ),
    CommentInput(text="you are a stupid fucking idiot, you idiot"),
    CommentInput(text="it's dogs' toys' rock'n'roll — don't"),
]


@pytest.mark.parametrize("which", ["spam", "abuse"])
def test_fast_scorer_matches_the_pipeline(which, spam_model, abuse_model) -> None:
    pipeline, manifest = spam_model if which == "spam" else abuse_model
    assert FastScorer.supports(pipeline)
    model = LoadedModel(which, "test", pipeline, manifest)
    expected = pipeline.predict_proba(COMMENTS)[:, 1]
    np.testing.assert_allclose(model.predict_proba(COMMENTS), expected, rtol=0, atol=1e-6)
    scores = model.score(COMMENTS)
    np.testing.assert_allclose([s.probability for s in scores], expected, rtol=0, atol=1e-6)
    clf = pipeline.named_steps["clf"]
    X = pipeline[:-1].transform(COMMENTS)
    cats = clf.predict_categories(X)
    for i, s in enumerate(scores):
        assert list(s.categories) == [str(c) for c in clf.category_names_]
        np.testing.assert_allclose(list(s.categories.values()), cats[i], atol=1e-4)
    # one at a time gives the same as the batch
    for c, s in zip(COMMENTS, scores, strict=True):
        (one,) = model.score([c])
        assert one.reasons == s.reasons and one.probability == pytest.approx(s.probability, abs=1e-12)


def test_reasons_quote_the_comment_and_are_bounded(spam_model) -> None:
    model = LoadedModel("spam", "test", *spam_model)
    for c, s in zip(COMMENTS, model.score(COMMENTS), strict=True):
        assert len(s.reasons) <= 5 and len(set(s.reasons)) == len(s.reasons)
        for r in s.reasons:
            if r.startswith(("word '", "phrase '")):
                quoted = r.split("'", 1)[1].rsplit("'", 1)[0]
                assert all(w in prepare_comment(c).text for w in quoted.split()), (r, c.text[:80])


def test_unsupported_pipeline_falls_back_to_sklearn(spam_model) -> None:
    pipeline, manifest = spam_model
    other = copy.deepcopy(pipeline)
    other.set_params(features__words__hash__ngram_range=(1, 3))
    assert not FastScorer.supports(other)
    model = LoadedModel("spam", "test", other, manifest)
    scores = model.score(COMMENTS[:3])
    np.testing.assert_allclose([s.probability for s in scores], other.predict_proba(COMMENTS[:3])[:, 1])


def test_prepared_comments_are_cached_and_shared(spam_model, abuse_model) -> None:
    c = CommentInput(text="a comment both models score", author_name="Someone")
    assert prepare_comment(c) is prepare_comment(CommentInput(text=c.text, author_name="Someone"))
    assert prepare_many(["plain string", {"text": "a dict"}])[1].text == "a dict"
    spam = FastScorer(spam_model[0])
    abuse = FastScorer(abuse_model[0])
    assert spam.hasher is abuse.hasher  # same hashing set-up: words hashed once for both models
