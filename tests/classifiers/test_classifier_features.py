"""Normalisation and feature extraction on hostile input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from classifiers import CommentInput, build_pipeline
from classifiers.common_words import LIST_FILES, build_common_words, common_words
from classifiers.data import SOURCES
from classifiers.fast import hashed_index as _index
from classifiers.fast import meta_phrase
from classifiers.features import NUMERIC_FEATURES, NumericFeatures, email_kind, prepare_comment
from classifiers.normalize import MAX_CHARS, normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("FR33 V1AGRA now!!!!", "free viagra now!!"),
        ("Сheap viаgra", "cheap viagra"),  # Cyrillic С and а inside Latin words
        ("f r e e money", "free money"),
        ("c@sh $ex h4te", "cash sex hate"),
        ("c@sh-m0ney v1agra/c1alis", "cash-money viagra/cialis"),  # each piece of a joined token
        ("zero\u200bwidth\u2060join\ufeff", "zerowidthjoin"),
        ("\u202eevil\u202c text", "evil text"),  # bidi override stripped
        ("sooooo goooood", "soo good"),
        ("awww. wwwwhat", "aww. wwhat"),
        ("wow!!!!\n\n\n\nnooo", "wow!!\n\nnoo"),  # any repeated character, newlines too
        ("h.e.l.l.o there, f-r-e-e", "hello there, free"),
        ("ＦＵＬＬＷＩＤＴＨ", "fullwidth"),  # NFKC
        ("it&#39;s <b>bold</b>", "it's  bold "),
        # the letter styles of "fancy text" generators, which NFKC leaves alone (or makes "(a)" of)
        ("ʏᴏᴜ ᴀʀᴇ ᴀɴ ɪᴅɪᴏᴛ", "you are an idiot"),  # small capitals
        ("ᶦᵈᶦᵒᵗ", "idiot"),  # superscripts (ᶦ is a small capital once NFKC has read it)
        ("🅘🅓🅘🅞🅣 🆂🅿🅰🅼", "idiot spam"),  # negative circled and squared
        ("⒤⒟⒤⒪⒯ 🄸🄳🄸🄾🅃 ⓘⓓⓘⓞⓣ", "idiot idiot idiot"),  # parenthesized, squared, circled
        ("ɑ ɡift", "a gift"),  # Latin alpha, script g
        # marks put on letters: strike-through, underline, "Zalgo", an accent on every letter
        ("i\u0336d\u0336i\u0336o\u0336t\u0336 i\u0332d\u0332i\u0332o\u0332t\u0332", "idiot idiot"),
        ("i\u0300\u0316\u0317d\u0300\u0316\u0317i\u0300\u0316\u0317o\u0300\u0316\u0317t\u0300\u0316\u0317", "idiot"),
        ("ídíót ŝṕàḿ", "idiot spam"),
        (
            "café’s crêpes, naïve Ñandú, tiếng Việt",
            "cafe’s crepes, naive nandu, tieng viet",
        ),  # accents of Latin letters
    ],
)
def test_normalize_undoes_obfuscation(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_prepared_text_folds_letters_that_html_entities_spell() -> None:
    """A comment's counts are taken on the styles-folded text, before its entities are read: the letters that
    entities spell ("ren&#233;e", "b&#299;tch", "&#7424;" for "ᴀ") are folded after them, as in ``normalize_text``."""
    for raw in ("Ren&#233;e b&#299;tch &#7424;", "Renée bītch ᴀ"):
        assert prepare_comment(CommentInput(text=raw)).text == normalize_text(raw) == "renee bitch a"


@pytest.mark.parametrize(
    "raw",
    [
        "call 1-800-555-0199 in 2024",
        "price 10.50 for 3 items",
        "mp3 covid19 user123",
        "earn $85/hour from home",  # a price and a word, not "s8s/hour"
        "a 5-star covid-19 hotel, 24/7",
        "open 10am to 5pm on the 3rd, 100mg, 1080p",
        "1000000 visitors, ٣٣٣٣ (Arabic-Indic digits) and curly quotes’",  # digit runs, curly quotes
        "@john, @user123: a reply (@ starts a handle), not 'ajohn'",
        '"@user2015: quoted" and (@john) and “@rihanna: a retweet”',  # quoted handles too
        "visit www.example.com or (www.example.org/page)",  # the reasons quote the address as written
    ],
)
def test_normalize_keeps_numbers_and_names(raw: str) -> None:
    assert normalize_text(raw) == raw.lower()


def test_normalize_leaves_real_non_latin_text_alone() -> None:
    assert normalize_text("Привет мир, йога и ёлка") == "привет мир, йога и ёлка"  # marks of other scripts stay
    assert normalize_text("Ελληνικά") == "ελληνικά"
    assert normalize_text("مرحبا بالعالم") == "مرحبا بالعالم"
    assert normalize_text("こんにちは 世界 🎉") == "こんにちは 世界 🎉"


@pytest.mark.parametrize(
    "text",
    ["", " ", "\x00\x01\x02\x7f", "\u202e\u200f" * 100, "🙂" * 3000, "a" * 1_000_000, "<" * 10_000,
     "http://" * 5000, "x(dot)" * 3000, "\ud800", "&" * 20_000, "Ω≈ç√∫" * 1000, "1" * 100_000, "c@sh/$5-" * 20_000,
     "Cheap Offers " * 50_000, "e\u0301\u0316" * 100_000, "ɪᴅ🅘" * 100_000],
)  # fmt: skip
def test_prepare_survives_hostile_input_quickly(text: str) -> None:
    start = time.perf_counter()
    prepared = prepare_comment(CommentInput(text=text, author_name=text[:300], author_email=text[:50]))
    assert time.perf_counter() - start < 0.5
    assert len(prepared.text) <= MAX_CHARS
    assert len(prepared.numeric) == len(NUMERIC_FEATURES)
    assert all(0.0 <= v <= 1.0 for v in prepared.numeric)


def test_metadata_features() -> None:
    p = prepare_comment(
        CommentInput(
            text="Visit HDMovieStream.COM and http://www.cheap.xyz/a call +1 (800) 555-0199",
            author_name="Norton Support Number 24x7",
            author_email="x@mailinator.com",
            author_url="http://spam.top",
            honeypot=True,
            seconds_since_post=20,
            post_title="Baking sourdough bread at home",
        )
    )
    tokens = set(p.meta.split())
    assert {"link_tld:xyz", "link_domain:cheap.xyz", "link_domain:hdmoviestream.com", "author_url:present",
            "email:disposable", "honeypot:filled", "since_post:<1m",
            "author_shape:many_words", "author_shape:digits"} <= tokens  # fmt: skip
    assert p.n_links == 2
    numeric = dict(zip(NUMERIC_FEATURES, p.numeric, strict=True))
    assert numeric["offtopic"] == 1.0
    assert numeric["phones"] > 0  # phone numbers are one numeric signal, not also a token


@pytest.mark.parametrize(
    ("text", "shouting"),
    [
        ("I will kill you.", 0.0),  # a capital "I" and a sentence start are not shouting
        ("Thanks Anna and Tom, I agree.", 0.0),  # Title Case names
        ("Привет Мир, Ещё Раз", 0.0),  # any alphabet
        ("YOU ARE AN IDIOT", 1.0),
        ("OK, thanks, I agree", 2 / 14),
        ("Thanks NASA for this", 4 / 17),
        ("ПРИВЕТ мир", 6 / 9),
        ("HELLOworld and DON'T", 3 / 17),  # a word in capitals only: "HELLOworld" is not, "DON" of "DON'T" is
        ("@USER @CNN thanks for this #MAGA", 0.0),  # handles and hashtags are names
        ("@USER YOU ARE AN IDIOT", 13 / 17),
    ],
)
def test_upper_ratio_counts_words_written_in_capitals(text: str, shouting: float) -> None:
    def shouted_letters(text: str) -> float:
        upper_ratio = prepare_comment(text).numeric[NUMERIC_FEATURES.index("upper_ratio")]
        return upper_ratio * sum(map(str.isalpha, text))

    assert shouted_letters(text) == pytest.approx(shouting * sum(map(str.isalpha, text)))
    # ASCII text takes a faster path: a non-ASCII letter appended sends it down the general one, same count.
    assert shouted_letters(text + " é") == pytest.approx(shouted_letters(text))


def test_numeric_features_zero_the_signals_a_model_ignores() -> None:
    prepared = [prepare_comment("Call +1 (800) 555-0199 now, only $25 until 12/03/2024")]
    full = NumericFeatures().fit(prepared).transform(prepared).toarray()[0]
    kept = NumericFeatures(ignore=("digit_ratio", "phones")).fit(prepared).transform(prepared).toarray()[0]
    ignored = [NUMERIC_FEATURES.index("digit_ratio"), NUMERIC_FEATURES.index("phones")]
    assert full[ignored].min() > 0 and kept[ignored].max() == 0
    others = [k for k in range(len(NUMERIC_FEATURES)) if k not in ignored]
    assert kept[others].tolist() == full[others].tolist()
    with pytest.raises(ValueError, match="unknown numeric signals"):
        NumericFeatures(ignore=("digits",)).fit(prepared)


@pytest.mark.parametrize(
    ("name", "shapes"),
    [
        ("Tom", set()),
        ("kate_77", {"digits"}),
        ("Jane Doe", set()),  # a person, written as people write their names
        ("Priya Kumar", set()),
        ("Cheap Flights", {"keywords"}),
        ("best seo services company", {"many_words", "keywords"}),
        ("Norton Support Number 24x7", {"digits", "many_words", "keywords"}),
        ("hdmoviestream.com", {"domain"}),
        ("casino", set()),  # one word is a name as much as a keyword
    ],
)
def test_author_name_tokens_say_how_the_name_reads_not_who_it_is(name: str, shapes: set[str]) -> None:
    tokens = prepare_comment(CommentInput(text="hello", author_name=name)).meta.split()
    assert all(t.startswith("author_shape:") for t in tokens), tokens  # no word of the name is a feature
    assert {t.removeprefix("author_shape:") for t in tokens} == shapes


@pytest.mark.parametrize(
    ("shape", "phrase"),
    [
        ("keywords", "author name reads like an ad"),
        ("digits", "digits in the author name"),
        ("domain", "author name is a web address"),
    ],
)
def test_each_author_name_shape_has_its_own_reason(shape: str, phrase: str) -> None:
    assert meta_phrase(f"author_shape:{shape}") == phrase  # only a name of keywords reads like an ad


def test_the_committed_common_words_are_rebuilt_from_the_training_allowed_data(data_dir: Path) -> None:
    """``python -m classifiers.common_words`` reproduces the committed list from the data README's training-allowed
    files (train splits), and only from those."""
    assert {Path(name).stem for name in LIST_FILES} == {s for s, info in SOURCES.items() if info["train_allowed"]}
    assert build_common_words(data_dir) == sorted(common_words())
    assert {"cheap", "support", "offers", "service"} <= common_words()
    assert not {"jane", "priya", "kumar", "smith"} & common_words()  # names, not words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("visit idquw.tk now", "visit link: idquw.tk now"),
        ("check out http://idquw.tk", "check out link: http://idquw.tk"),
        ('great <a href="http://x.com/a">cheap pills</a>', "great link: cheap pills"),
        ('see <a href="http://x.com">http://x.com</a>', "see link: http://x.com"),  # one mark per link
        ("link: http://a.com", "link: http://a.com"),
        ("a video (https://youtu.be/x)", "a video ( link: https://youtu.be/x)"),  # the mark is a word of its own
        ("news at gonintendo(dot)com/?id=5", "news at link: gonintendo.com/?id=5"),  # a dot spelled out
        ("visit example [dot] co [dot] uk", "visit link: example.co.uk"),
        ("the dot com bubble, the (dot) notation", "the dot com bubble, the (dot) notation"),
        ("no links in this one, just a dot.", "no links in this one, just a dot."),
    ],
)
def test_every_link_is_marked_in_the_text(text: str, expected: str) -> None:
    """A link with or without its scheme, or hidden in an anchor, shares the n-grams around it."""
    assert " ".join(prepare_comment(CommentInput(text=text)).text.split()) == expected


def test_missing_metadata_is_neutral() -> None:
    """Absent metadata yields no tokens and zero numeric values: nothing for a model to learn from."""
    p = prepare_comment(CommentInput(text="just some words here"))
    assert p.meta == ""
    assert dict(zip(NUMERIC_FEATURES, p.numeric, strict=True))["offtopic"] == 0.0


@pytest.mark.parametrize(
    ("email", "kind"),
    [
        ("", ""),
        ("a@gmail.com", "free"),
        ("b@yopmail.com", "disposable"),
        ("c@acme.io", "corporate"),
        ("nope", "invalid"),
    ],
)
def test_email_kind(email: str, kind: str) -> None:
    assert email_kind(email) == kind


def test_explainer_hash_matches_vectorizer() -> None:
    """Explanations re-hash n-grams; the index must be the one HashingVectorizer uses."""
    vec = build_pipeline("spam").named_steps["features"].transformer_list[0][1].named_steps["hash"]
    assert isinstance(vec, HashingVectorizer)
    for term in ["click here", "viagra", "ümlaut", "日本"]:
        row = vec.transform([term]) if " " not in term else vec.transform([term])
        expected = _index(term, vec.n_features)
        assert expected in set(np.flatnonzero(row.toarray()[0]))
