"""Pipeline fit and score, calibration, operating point, explanations and category heads."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from classifiers import (
    CommentInput,
    Dataset,
    Thresholds,
    build_pipeline,
    choose_operating_point,
    evaluate,
    load_csv,
    train_model,
    training,
)
from classifiers.misspell import misspelt
from classifiers.model import ModerationClassifier, fold_ids
from classifiers.registry import LoadedModel
from classifiers.training import category_boost, training_rows


def test_build_pipeline_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        build_pipeline("ham")


def test_trained_spam_model_ranks_and_calibrates(spam_model, small_spam: list[Dataset]) -> None:
    pipeline, manifest = spam_model
    test = Dataset.concat([d.split("test") for d in small_spam])
    p = pipeline.predict_proba(test.comments)[:, 1]
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    metrics = evaluate(pipeline, test, Thresholds(**manifest["thresholds"]))
    assert metrics["roc_auc"] > 0.9
    # Calibrated: better Brier score than always answering the base rate, mean close to the base rate.
    base = brier_score_loss(test.labels, np.full(len(test), test.labels.mean()))
    assert metrics["brier"] < base
    assert abs(p.mean() - test.labels.mean()) < 0.15
    assert set(manifest) >= {"data", "parameters", "metrics", "thresholds", "libraries", "created_at", "git_commit"}
    assert all(len(f["sha256"]) == 64 and f["licence"] for f in manifest["data"])


def test_choose_operating_point_meets_its_budget() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1000), np.ones(500)].astype(int)
    p = np.r_[rng.beta(2, 8, 1000), rng.beta(8, 2, 500)]
    t = choose_operating_point(y, p)
    assert 0 < t.approve_below <= t.reject_at <= 1
    assert (p[y == 0] >= t.reject_at).mean() <= 0.005
    assert (p[y == 1] < t.approve_below).mean() <= 0.02
    with pytest.raises(ValueError):
        choose_operating_point([0, 0], [0.1, 0.2])


def test_choose_operating_point_counts_every_source_the_same() -> None:
    # A big, easy source and a small, hard one: pooled, the big one sets the band and the small one's
    # ham is rejected far beyond budget; with sources, each source's ham rejected stays within budget and
    # the positives-approved budget holds for the mean of the two rates.
    rng = np.random.default_rng(1)
    y_big, p_big = np.r_[np.zeros(5000), np.ones(1000)], np.r_[rng.beta(1, 20, 5000), rng.beta(20, 1, 1000)]
    y_small, p_small = np.r_[np.zeros(200), np.ones(200)], np.r_[rng.beta(2, 3, 200), rng.beta(3, 2, 200)]
    y, p = np.r_[y_big, y_small].astype(int), np.r_[p_big, p_small]
    sources = ["big"] * len(y_big) + ["small"] * len(y_small)
    pooled = choose_operating_point(y, p)
    per_source = choose_operating_point(y, p, sources=sources)
    assert choose_operating_point(y, p, sources=["one"] * len(y)) == pooled

    def rates(t: Thresholds) -> tuple[float, float]:
        ham = np.mean([(pp[yy == 0] >= t.reject_at).mean() for yy, pp in ((y_big, p_big), (y_small, p_small))])
        pos = np.mean([(pp[yy == 1] < t.approve_below).mean() for yy, pp in ((y_big, p_big), (y_small, p_small))])
        return float(ham), float(pos)

    assert rates(pooled)[0] > 0.005
    assert rates(per_source)[0] <= 0.005 and rates(per_source)[1] <= 0.02
    assert (p_small[y_small == 0] >= per_source.reject_at).mean() <= 0.005
    assert (p_big[y_big == 0] >= per_source.reject_at).mean() <= 0.005
    # The approve edge averages: the easy source's unused budget lets the hard one approve more than 2% alone.
    assert (p_small[y_small == 1] < per_source.approve_below).mean() > 0.02


def test_thresholds_decide() -> None:
    t = Thresholds(approve_below=0.2, reject_at=0.9)
    assert [t.decide(p) for p in (0.1, 0.2, 0.5, 0.9)] == ["approve", "hold", "hold", "reject"]


def test_score_explains_with_model_features(spam_model) -> None:
    pipeline, manifest = spam_model
    model = LoadedModel("spam", "test", pipeline, manifest)
    comments = [
        CommentInput(text="Check out my channel!! subscribe http://bit.ly/x http://bit.ly/y http://spam.xyz/z"),
        CommentInput(text="I love this song, the chorus is great"),
        CommentInput(text=""),
        CommentInput(text="\u202e\u200b🙂" * 2000),
    ]
    scores = model.score(comments)
    assert len(scores) == 4
    assert scores[0].probability > scores[1].probability
    assert 0 < len(scores[0].reasons) <= 5
    assert any("link" in r or "subscribe" in r or "channel" in r for r in scores[0].reasons), scores[0].reasons
    assert scores[0].categories == {}
    np.testing.assert_allclose([s.probability for s in scores], model.predict_proba(comments))
    assert model.score([]) == [] and model.predict_proba([]).shape == (0,)


def test_abuse_model_has_category_heads(abuse_model) -> None:
    pipeline, manifest = abuse_model
    assert {"offensive", "hate"} <= set(manifest["categories"])
    model = LoadedModel("abuse", "test", pipeline, manifest)
    insult, polite = model.score([CommentInput("you are a stupid fucking idiot"), CommentInput("thanks, great post")])
    assert insult.probability > polite.probability
    assert set(insult.categories) == set(manifest["categories"])
    assert insult.categories["offensive"] > polite.categories["offensive"]


def test_evaluate_reports_sublabel_breakdown(abuse_model, data_dir, slicer) -> None:
    pipeline, manifest = abuse_model
    model = LoadedModel("abuse", "test", pipeline, manifest)
    hatecheck = slicer.take(load_csv(data_dir / "abuse" / "hatecheck.csv"), {"test": 200})
    out = evaluate(model, hatecheck)
    assert out["n"] == 200 and "by_sublabel" in out
    assert set(out["operating_point"]) == {"approve_below", "reject_at", "ham_rejected", "positives_approved", "held"}


def test_naive_bayes_weighting_folds_into_the_weights() -> None:
    """NB scaling changes the fit, not the model's shape: scores are ``x . w`` on the unscaled features,
    columns both classes use alike are damped, and columns past ``nb_columns`` are left alone."""
    import scipy.sparse as sp

    from classifiers.model import ModerationClassifier, nb_scale

    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    X = np.zeros((n, 4))
    X[:, 0] = y * rng.random(n)  # only in positives: strongly indicative
    X[:, 1] = rng.random(n)  # both classes alike: uninformative
    X[:, 2] = (1 - y) * rng.random(n)  # only in negatives
    X[:, 3] = rng.random(n)  # past nb_columns: never scaled
    Xs = sp.csr_matrix(X)
    w = np.ones(n)
    scale = nb_scale(Xs, y, w, columns=3, power=0.5, alpha=1.0)
    assert scale[3] == 1.0
    assert scale[0] > 5 * scale[1] and scale[2] > 5 * scale[1]
    assert np.array_equal(nb_scale(Xs, y, w, columns=3, power=0.0, alpha=1.0), np.ones(4))

    plain = ModerationClassifier(C=1.0).fit(Xs, y)
    weighted = ModerationClassifier(C=1.0, nb_columns=3, nb_power=0.5).fit(Xs, y)
    assert weighted.coef_.shape == plain.coef_.shape
    a, b = weighted.calibration_
    expected = a * (X @ weighted.coef_ + weighted.intercept_) + b
    assert np.allclose(weighted.decision_function(Xs), expected)
    # The uninformative column loses weight relative to the informative one.
    assert abs(weighted.coef_[1] / weighted.coef_[0]) < abs(plain.coef_[1] / plain.coef_[0])
    assert weighted.predict_proba(Xs)[y == 1, 1].mean() > weighted.predict_proba(Xs)[y == 0, 1].mean() + 0.5


def test_naive_bayes_mix_folds_into_the_weights() -> None:
    """``nb_mix`` adds naive-Bayes log-ratios to the regression's weights: still one weight vector, a rare
    column seen only in positives gains weight, and a column never seen in training stays at zero."""
    import scipy.sparse as sp

    from classifiers.model import ModerationClassifier, nb_log_ratio

    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    X = np.zeros((n, 5))
    X[:, 0] = y * (rng.random(n) < 0.03)  # rare, and only ever in positives
    X[:, 1] = rng.random(n)  # both classes alike
    X[:, 2] = y * rng.random(n) + 0.2 * rng.random(n)  # common, mostly in positives
    X[:, 3] = 0.0  # never seen in training
    X[:, 4] = rng.random(n)  # past nb_columns: not a naive-Bayes column
    Xs = sp.csr_matrix(X)
    w = np.ones(n)
    r = nb_log_ratio(Xs, y, w, columns=4, alpha=0.1)
    assert r.shape == (4,) and r[3] == 0.0 and r[0] > 1.0 and abs(r[1]) < 0.3

    plain = ModerationClassifier(C=1.0, nb_columns=4).fit(Xs, y)
    mixed = ModerationClassifier(C=1.0, nb_columns=4, nb_alpha=0.1, nb_mix=0.5).fit(Xs, y)
    assert mixed.coef_.shape == plain.coef_.shape and mixed.coef_[3] == 0.0
    assert mixed.coef_[4] == plain.coef_[4]  # the regression part is the same fit
    assert mixed.coef_[0] / mixed.coef_[2] > plain.coef_[0] / plain.coef_[2]  # the rare clean signal counts more
    a, b = mixed.calibration_
    assert np.allclose(mixed.decision_function(Xs), a * (X @ mixed.coef_ + mixed.intercept_) + b)
    assert mixed.predict_proba(Xs)[y == 1, 1].mean() > mixed.predict_proba(Xs)[y == 0, 1].mean() + 0.3


def test_category_boost_weighs_up_the_labelled_categories() -> None:
    categories = {
        "hate": np.array([1, 0, -1, -1, 0]),  # Davidson rows annotate "hate"; -1: not annotated by the row's source
        "threat": np.array([-1, -1, 1, 0, 0]),
        "obscene": np.array([-1, -1, 1, 1, 0]),
    }
    boost = category_boost(categories, 5, {"hate": 8.0, "threat": 3.0, "identity_hate": 2.0})
    assert boost.tolist() == [8.0, 1.0, 3.0, 1.0, 1.0]
    assert category_boost({}, 3, {"hate": 8.0}).tolist() == [1.0, 1.0, 1.0]


def test_a_text_in_two_training_files_trains_once(data_dir, slicer) -> None:
    """jigsaw-categories shares ~500 texts with jigsaw: ``train_model`` and the encoder measurement take each text's
    first train row only, and never a dev or test row."""
    jigsaw = slicer.take(load_csv(data_dir / "abuse" / "jigsaw.csv"), {"train": 40, "dev": 10})
    again = jigsaw.subset(np.arange(len(jigsaw)) < 5)
    again.comments = [replace(c, text=c.text.upper()) for c in again.comments]  # the same normalised text
    data = Dataset.concat([jigsaw, again])
    rows = training_rows(data)
    assert rows.dtype == bool and rows.shape == (len(data),)
    first = np.array([s == "train" for s in jigsaw.splits])
    assert (rows[: len(jigsaw)] == first).all()
    assert not rows[len(jigsaw) :].any()  # the repeats are not taken again, whatever their split
    assert training_rows(jigsaw).sum() == first.sum() == 40


def test_category_weights_teach_the_model_more_about_hate(data_dir, slicer, monkeypatch) -> None:
    davidson = slicer.take(load_csv(data_dir / "abuse" / "davidson.csv"), {"train": 500, "dev": 100})
    hate = davidson.categories["hate"] == 1
    offensive = davidson.categories["offensive"] == 1

    def hate_gap(weights: dict[str, float]) -> float:
        monkeypatch.setitem(training.CATEGORY_WEIGHT, "abuse", weights)
        pipeline, manifest = train_model("abuse", [davidson], evaluate_on=())
        assert manifest["parameters"]["category_weight"] == weights
        logit = pipeline.named_steps["clf"].decision_function(pipeline[:-1].transform(davidson.comments))
        return float(logit[hate].mean() - logit[offensive].mean())

    assert hate.sum() >= 20
    plain, weighted = hate_gap({}), hate_gap({"hate": 8.0})  # mean logit of hate minus offensive rows
    assert weighted > plain + 0.5


def test_misspelt_copies_keep_the_word_shape_and_are_deterministic() -> None:
    text = "You are a complete idiot, nobody reads your pathetic comments. ok?"
    copy = misspelt(text, rate=1.0)
    assert copy != text and copy == misspelt(text, rate=1.0)
    words, copied = text.split(), copy.split()
    assert len(words) == len(copied)  # words are misspelt in place, never split or joined
    long_words = [(w, c) for w, c in zip(words, copied, strict=True) if len(w.strip(",.?")) >= 4]
    assert all(c == w for w, c in zip(words, copied, strict=True) if len(w.strip(",.?")) < 4)  # short words stay
    assert sum(c != w for w, c in long_words) >= len(long_words) - 1  # a vowel may be replaced by itself
    for word, new in long_words:
        assert new[0] == word[0] and new.strip(",.?")[-1] == word.strip(",.?")[-1] and abs(len(new) - len(word)) <= 1
    assert misspelt(text, rate=0.0) == text
    assert misspelt("") == "" and misspelt("ok no way") == "ok no way"
    assert len(misspelt("Привет отличный сайт", rate=1.0)) >= len("Привет отличный сайт") - 3  # any script


def test_a_misspelt_copy_is_scored_out_of_fold_with_its_original() -> None:
    y = np.array([0, 1] * 30)
    plain = fold_ids(y, np.arange(60), cv=3, random_state=0)
    origin = np.concatenate([np.arange(60), np.arange(0, 60, 2)])  # a copy of every other row
    folds = fold_ids(np.concatenate([y, y[::2]]), origin, cv=3, random_state=0)
    assert (folds[:60] == plain).all()  # the originals keep the folds they have without copies
    assert (folds[60:] == folds[origin[60:]]).all()
    assert sorted(np.bincount(plain)) == [20, 20, 20]


def test_abuse_training_adds_misspelt_copies_that_do_not_calibrate(data_dir, slicer, monkeypatch) -> None:
    davidson = slicer.take(load_csv(data_dir / "abuse" / "davidson.csv"), {"train": 300, "dev": 80})
    seen: dict[str, np.ndarray] = {}
    fit = ModerationClassifier.fit

    def spy(self, X, y, sample_weight=None, calibration_weight=None, categories=None, copy_of=None):
        seen.update(y=np.asarray(y), w=sample_weight, cw=calibration_weight, copy_of=copy_of)
        return fit(self, X, y, sample_weight, calibration_weight, categories, copy_of)

    monkeypatch.setattr(ModerationClassifier, "fit", spy)
    monkeypatch.setitem(training.MISSPELT_COPY_WEIGHT, "abuse", 0.15)
    _, manifest = train_model("abuse", [davidson], evaluate_on=())
    assert manifest["parameters"]["misspelt_copy_weight"] == 0.15
    copy_of = seen["copy_of"]
    copies = np.flatnonzero(copy_of >= 0)
    n = manifest["rows"]["train"]
    assert len(copies) > n // 2 and (copies >= n).all() and (copy_of[:n] == -1).all()
    assert (seen["y"][copies] == seen["y"][copy_of[copies]]).all()
    assert np.allclose(seen["w"][copies], 0.15 * seen["w"][copy_of[copies]])
    assert (seen["cw"][copies] == 0).all() and (seen["cw"][:n] > 0).all()

    monkeypatch.setitem(training.MISSPELT_COPY_WEIGHT, "abuse", 0.0)
    train_model("abuse", [davidson], evaluate_on=())
    assert seen["copy_of"] is None and len(seen["y"]) == n


def test_a_site_s_labels_teach_keyword_author_names_not_the_names_themselves() -> None:
    """Trained where spam comes from names made of ordinary words and legitimate comments from people, a model
    scores a keyword name it never saw above a person's name it never saw: it learnt how the name reads, not who
    it is (the name's words are no features). The texts are the same in both classes."""
    people = ["Ingrid Holm", "Tomasz Nowak", "Aiko Tanaka", "Lars Eriksson", "Priya Raman", "Kwame Mensah",
              "Olga Petrova", "Diego Alvarez", "Fatima Haddad", "Sven Lindqvist"]  # fmt: skip
    keywords = ["Cheap Flights", "Garden Tools", "Best Deals", "Home Insurance", "Car Rental", "Free Games",
                "Discount Shoes", "Hotel Booking", "Online Pharmacy", "Fast Money"]  # fmt: skip
    texts = ["Nice post, thanks for writing it.", "Interesting read, I learnt something.", "Great article!",
             "Thank you, this was helpful.", "Good points here."]  # fmt: skip
    comments = [CommentInput(text=t, author_name=n) for n in people + keywords for t in texts]
    y = np.array([0] * len(people) * len(texts) + [1] * len(keywords) * len(texts))
    pipeline = build_pipeline("spam").fit(comments, y)
    unseen = [CommentInput(text="Thanks, nice post.", author_name=n) for n in ("Sigrid Nakamura", "Wedding Dresses")]
    person, keyword = pipeline.predict_proba(unseen)[:, 1]
    assert keyword - person > 0.2, (person, keyword)
