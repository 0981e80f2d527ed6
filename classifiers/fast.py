"""Fast scoring with reasons: the fitted pipeline's arithmetic, done per batch with numpy on cached hashes.

``build_pipeline`` stays the model definition (training, persistence, ``Pipeline.predict_proba``).
``FastScorer`` reads the fitted parameters of such a pipeline and reproduces its probabilities (to float
rounding; the tests check it) without sklearn's per-call validation and FeatureUnion plumbing:

- n-grams are hashed once per distinct *word* and cached: ``char_wb`` n-grams never cross a space and the
  word tokens of a text are the tokens of its space-separated words, so a comment's columns are the union of
  its words' columns (plus its word bigrams). The cache is shared by every model with the same hashing
  set-up (the spam and abuse models), so the second model of a batch finds every word hashed already;
- TF-IDF, l2 norms, the calibrated logit and the category heads are a handful of array operations per batch;
- explanations reuse the same arrays: a column's contribution is ``calibrated weight × value``; a char
  n-gram's contribution is split between the comment's words that contain it, a bigram's between its two
  words; runs of words that push towards the positive class read as one phrase. Only those words are
  turned back into text, so the reasons quote the comment ("phrase 'check out my channel'").
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.pipeline import Pipeline
from sklearn.utils import murmurhash3_32

from classifiers.comment import ModelScore
from classifiers.features import NUMERIC_FEATURES, NumericFeatures, PreparedComment, numeric_reference

MAX_REASONS = 5
MIN_CONTRIBUTION = 0.05  # in calibrated logit units; below this a feature barely moved the score
MAX_PHRASE_WORDS = 4
CACHE_SIZE = 200_000  # distinct words / bigrams / metadata tokens per hashing set-up (≈ 40 MB when full)

NUMERIC_PHRASES = {
    "link_density": "many links for its length",
    "upper_ratio": "mostly capital letters",
    "symbol_ratio": "many symbols",
    "digit_ratio": "many digits",
    "length": "long text",
    "phones": "phone number",
    "script_mix": "mixes alphabets",
    "offtopic": "off-topic for the post",
}
_EMAIL_PHRASES = {
    "free": "free-mail address",
    "disposable": "disposable e-mail address",
    "corporate": "company e-mail address",
    "invalid": "invalid e-mail address",
}


def meta_phrase(token: str) -> str:
    """A metadata token (``link_tld:xyz``) in a moderator's words (``link to a .xyz domain``)."""
    key, _, value = token.partition(":")
    if key == "link_domain":
        return f"link to {value}"
    if key == "link_tld":
        return f"link to a .{value} domain"
    if key in ("author_word", "author_shape"):
        return "author name reads like an ad"
    if key == "author_url":
        return "author gives a website"
    if key == "author_url_tld":
        return f"author website on a .{value} domain"
    if key == "email":
        return _EMAIL_PHRASES.get(value, "e-mail address")
    if key == "email_tld":
        return f"e-mail on a .{value} domain"
    if key == "honeypot":
        return "hidden form field filled in"
    if key == "since_post":
        return f"posted {value.replace('<', 'within ')} of the post"
    if key == "phone":
        return "phone number"
    if key in ("scripts", "script"):
        return f"written in {value.replace('+', ' and ')}"
    if key == "type":
        return f"a {value}"
    return token


_NUMERIC_REFERENCE = numeric_reference()


def numeric_contribution(contribution: float, value: float, k: int) -> float:
    """A numeric signal's share of the score relative to a typical comment (weight × (value − typical value))."""
    if value == 0.0:  # nothing of it in this comment (an empty text is not "long")
        return 0.0
    return contribution * (value - _NUMERIC_REFERENCE[k]) / value


def hashed_index(term: str, n_features: int) -> int:
    """The column HashingVectorizer(alternate_sign=False) gives ``term``."""
    return abs(murmurhash3_32(term, seed=0, positive=False)) % n_features


@dataclass(frozen=True, slots=True)
class _Word:
    tokens: tuple[str, ...]  # word tokens (token_pattern) inside this space-separated word
    unigrams: tuple[int, ...]  # their word-block columns
    char_cols: np.ndarray  # distinct char-block columns of the word's char_wb n-grams (int64)
    char_counts: np.ndarray  # occurrences of each (float64)


class TextHasher:
    """Per-word hashing with bounded caches; one instance per hashing set-up, shared across models."""

    def __init__(
        self,
        tokenize: Callable[[str], list[str]],
        char_analyzer: Callable[[str], list[str]],
        n_word: int,
        n_char: int,
        n_meta: int,
    ) -> None:
        self._tokenize = tokenize
        self._char_analyzer = char_analyzer
        self.n_word, self.n_char, self.n_meta = n_word, n_char, n_meta
        self._words: dict[str, _Word] = {}
        self._bigrams: dict[tuple[str, str], int] = {}
        self._meta: dict[str, int] = {}

    @property
    def cached_word(self) -> Callable[[str], _Word | None]:
        return self._words.get

    def word(self, w: str) -> _Word:
        info = self._words.get(w)
        if info is None:
            tokens = tuple(self._tokenize(w))
            grams = self._char_analyzer(w)
            cols, counts = np.unique(
                np.fromiter((hashed_index(g, self.n_char) for g in grams), dtype=np.int64, count=len(grams)),
                return_counts=True,
            )
            info = _Word(tokens, tuple(hashed_index(t, self.n_word) for t in tokens), cols, counts.astype(np.float64))
            if len(self._words) >= CACHE_SIZE:
                self._words.clear()  # crude but bounded; refills from the next comments
            self._words[w] = info
        return info

    def bigrams(self, tokens: list[str]) -> list[int]:
        """Columns of the bigrams of ``tokens`` (cached by token pair: no string is built on a hit)."""
        cache = self._bigrams
        pairs = zip(tokens, tokens[1:], strict=False)
        try:
            return [cache[ab] for ab in pairs]
        except KeyError:
            return [self._bigram(ab) for ab in zip(tokens, tokens[1:], strict=False)]

    def _bigram(self, pair: tuple[str, str]) -> int:
        j = self._bigrams.get(pair)
        if j is None:
            j = hashed_index(f"{pair[0]} {pair[1]}", self.n_word)
            if len(self._bigrams) >= CACHE_SIZE:
                self._bigrams.clear()
            self._bigrams[pair] = j
        return j

    def meta(self, token: str) -> int:
        j = self._meta.get(token)
        if j is None:
            j = hashed_index(token, self.n_meta)
            if len(self._meta) >= CACHE_SIZE:
                self._meta.clear()
            self._meta[token] = j
        return j


_HASHERS: dict[tuple[Any, ...], TextHasher] = {}
_HASHERS_LOCK = threading.Lock()


def _shared_hasher(word: HashingVectorizer, char: HashingVectorizer, meta: HashingVectorizer) -> TextHasher:
    key = (word.token_pattern, word.n_features, char.ngram_range, char.n_features, meta.n_features)
    with _HASHERS_LOCK:
        hasher = _HASHERS.get(key)
        if hasher is None:
            hasher = TextHasher(
                word.build_tokenizer(), char.build_analyzer(), word.n_features, char.n_features, meta.n_features
            )
            _HASHERS[key] = hasher
        return hasher


def _plain_hashing(vec: Any, analyzer: str) -> bool:
    return (
        isinstance(vec, HashingVectorizer)
        and vec.analyzer == analyzer
        and vec.input == "content"
        and not vec.lowercase
        and vec.preprocessor is None
        and vec.tokenizer is None
        and vec.strip_accents is None
        and vec.stop_words is None
        and not vec.alternate_sign
        and vec.norm is None
    )


def _tfidf(block: Any) -> TfidfTransformer | None:
    steps = getattr(block, "named_steps", {})
    t = steps.get("tfidf")
    ok = isinstance(t, TfidfTransformer) and t.norm == "l2" and t.use_idf and hasattr(t, "idf_")
    return t if ok else None


@dataclass
class _Block:
    rows: np.ndarray  # row of each distinct (row, column) entry
    cols: np.ndarray  # column within the block
    values: np.ndarray  # feature value (what the linear model multiplies)
    inverse: np.ndarray  # for each raw entry, its distinct entry


def _first_occurrences(inverse: np.ndarray, n_distinct: int) -> np.ndarray:
    """Index of the first raw entry of each distinct entry."""
    first = np.full(n_distinct, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(inverse)))
    return first


def _tfidf_block(
    rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, n_rows: int, n_features: int, idf: np.ndarray, sub: bool
) -> _Block:
    """Sum duplicate (row, column) entries, then TfidfTransformer's arithmetic: log tf, × idf, row l2 norm."""
    keys, inverse = np.unique(rows * n_features + cols, return_inverse=True)
    tf = np.bincount(inverse, weights=counts)
    r, c = np.divmod(keys, n_features)
    values = (np.log(tf) + 1.0 if sub else tf) * idf[c]
    norms = np.sqrt(np.bincount(r, weights=values * values, minlength=n_rows))
    values /= norms[r]
    return _Block(r, c, values, inverse.ravel())


class FastScorer:
    """Probabilities, category probabilities and reasons of a fitted ``build_pipeline`` pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        blocks = dict(pipeline.named_steps["features"].transformer_list)
        words, chars, meta = (blocks[k].named_steps["hash"] for k in ("words", "chars", "meta"))
        self.hasher = _shared_hasher(words, chars, meta)
        self._bigrams = tuple(words.ngram_range) == (1, 2)
        t_word, t_char = _tfidf(blocks["words"]), _tfidf(blocks["chars"])
        assert t_word is not None and t_char is not None
        self._idf_word = np.asarray(t_word.idf_, dtype=np.float64)
        self._idf_char = np.asarray(t_char.idf_, dtype=np.float64)
        self._sub_word, self._sub_char = bool(t_word.sublinear_tf), bool(t_char.sublinear_tf)
        n_word, n_char, n_meta = words.n_features, chars.n_features, meta.n_features
        self._off_char = n_word
        self._off_meta = n_word + n_char
        self._off_num = n_word + n_char + n_meta
        self.n_features = self._off_num + len(NUMERIC_FEATURES)

        clf = pipeline.named_steps["clf"]
        a, b = (float(v) for v in clf.calibration_)
        w = np.asarray(clf.coef_, dtype=np.float64).ravel() * a  # contributions in calibrated logit units
        self._w_word = w[:n_word]
        self._w_char = w[n_word : self._off_meta]
        self._w_meta = w[self._off_meta : self._off_num]
        self._w_num = w[self._off_num :]
        self._bias = a * float(clf.intercept_) + b
        self.categories = [str(c) for c in clf.category_names_]
        # Category heads as a dense (features x heads) float32 matrix: one sparse-dense product per batch.
        heads = sp.csr_matrix(clf.category_coef_)
        self._heads = np.ascontiguousarray(heads.T.toarray(), dtype=np.float32) if len(self.categories) else None
        self._head_params = np.asarray(clf.category_params_, dtype=np.float64).reshape(-1, 3)

    @staticmethod
    def supports(pipeline: Pipeline) -> bool:
        """True for pipelines of the shape ``build_pipeline`` makes (older or foreign ones use sklearn)."""
        try:
            blocks = dict(pipeline.named_steps["features"].transformer_list)
            clf = pipeline.named_steps["clf"]
            return (
                list(blocks) == ["words", "chars", "meta", "numeric"]
                and _plain_hashing(blocks["words"].named_steps["hash"], "word")
                and tuple(blocks["words"].named_steps["hash"].ngram_range) in ((1, 1), (1, 2))
                and _plain_hashing(blocks["chars"].named_steps["hash"], "char_wb")
                and _plain_hashing(blocks["meta"].named_steps["hash"], "word")
                and blocks["meta"].named_steps["hash"].token_pattern == r"\S+"
                and blocks["meta"].named_steps["hash"].binary
                and tuple(blocks["meta"].named_steps["hash"].ngram_range) == (1, 1)
                and list(blocks["meta"].named_steps) == ["select", "hash"]
                and _tfidf(blocks["words"]) is not None
                and _tfidf(blocks["chars"]) is not None
                and isinstance(blocks["numeric"], NumericFeatures)
                and hasattr(clf, "calibration_")
                and pipeline.named_steps["features"].transformer_weights is None
            )
        except (AttributeError, KeyError, TypeError):
            return False

    # ---- scoring -----------------------------------------------------------------------------------
    def predict_proba(self, prepared: Sequence[PreparedComment]) -> np.ndarray:
        """Calibrated positive-class probability per comment."""
        return self._run(prepared, explain=False)[0]

    def score(self, prepared: Sequence[PreparedComment]) -> list[ModelScore]:
        """Probability, reasons and category probabilities per comment."""
        p, cats, reasons = self._run(prepared, explain=True)
        names = self.categories
        return [
            ModelScore(
                probability=float(p[i]),
                reasons=reasons[i],
                categories={name: round(float(cats[i, j]), 4) for j, name in enumerate(names)},
            )
            for i in range(len(prepared))
        ]

    def _run(
        self, prepared: Sequence[PreparedComment], explain: bool
    ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        n = len(prepared)
        hasher = self.hasher
        word_of = hasher.word
        cached = hasher.cached_word
        w_cols: list[int] = []  # word block: one entry per token / bigram occurrence
        w_per_row: list[int] = []
        w_ua: list[int] = []  # distinct-word ids an entry is credited to (a bigram: its two words)
        w_ub: list[int] = []
        c_cols: list[np.ndarray] = []  # char block: one piece per distinct word of a comment
        c_counts: list[np.ndarray] = []
        c_lens: list[int] = []
        pieces_per_row: list[int] = []
        u_text: list[str] = []  # distinct words of every comment, batch-wide ids in first-occurrence order
        pos_u: list[list[int]] = []  # per comment: the distinct-word id of each word position
        texts: list[list[str]] = []
        m_rows: list[int] = []
        m_cols: list[int] = []
        m_tokens: list[list[tuple[str, int]]] = []
        for i, pc in enumerate(prepared):
            words = pc.text.split()
            counts = Counter(words)
            base = len(u_text)
            infos = [cached(w) or word_of(w) for w in counts]
            u_text.extend(counts)
            c_cols.extend([info.char_cols for info in infos])
            c_counts.extend(
                [
                    info.char_counts * m if m > 1 else info.char_counts
                    for info, m in zip(infos, counts.values(), strict=True)
                ]
            )
            c_lens.extend([len(info.char_cols) for info in infos])
            pieces_per_row.append(len(infos))
            if len(infos) == len(words):
                seq = list(range(base, base + len(words)))
                seq_infos = infos
            else:
                local = {w: base + k for k, w in enumerate(counts)}
                seq = [local[w] for w in words]
                seq_infos = [infos[u - base] for u in seq]
            toks = [t for info in seq_infos for t in info.tokens]
            w_cols.extend([j for info in seq_infos for j in info.unigrams])
            n_entries = len(toks)
            if self._bigrams and len(toks) > 1:
                w_cols.extend(hasher.bigrams(toks))
                n_entries += len(toks) - 1
            w_per_row.append(n_entries)
            if explain:
                pos_u.append(seq)
                texts.append(words)
                tok_u = [u for info, u in zip(seq_infos, seq, strict=True) for _ in info.tokens]
                w_ua.extend(tok_u)
                w_ub.extend(tok_u)
                if self._bigrams and len(toks) > 1:
                    w_ua.extend(tok_u[:-1])
                    w_ub.extend(tok_u[1:])
            if pc.meta:
                tokens = list(dict.fromkeys(pc.meta.split()))
                cols = [hasher.meta(t) for t in tokens]
                m_tokens.append(list(zip(tokens, cols, strict=True)))
                for j in dict.fromkeys(cols):
                    m_rows.append(i)
                    m_cols.append(j)
            else:
                m_tokens.append([])

        z = np.full(n, self._bias)
        wb = _tfidf_block(
            np.repeat(np.arange(n), w_per_row),
            np.asarray(w_cols, dtype=np.int64),
            np.ones(len(w_cols)),
            n,
            hasher.n_word,
            self._idf_word,
            self._sub_word,
        )
        w_contrib = wb.values * self._w_word[wb.cols]
        z += np.bincount(wb.rows, weights=w_contrib, minlength=n)
        lens = np.asarray(c_lens, dtype=np.int64)
        cb = _tfidf_block(
            np.repeat(np.repeat(np.arange(n), pieces_per_row), lens),
            np.concatenate(c_cols) if c_cols else np.zeros(0, dtype=np.int64),
            np.concatenate(c_counts) if c_counts else np.zeros(0),
            n,
            hasher.n_char,
            self._idf_char,
            self._sub_char,
        )
        c_contrib = cb.values * self._w_char[cb.cols]
        z += np.bincount(cb.rows, weights=c_contrib, minlength=n)
        m_r = np.asarray(m_rows, dtype=np.int64)
        m_c = np.asarray(m_cols, dtype=np.int64)
        z += np.bincount(m_r, weights=self._w_meta[m_c], minlength=n)
        numeric = np.asarray([pc.numeric for pc in prepared], dtype=np.float32).astype(np.float64)
        numeric = numeric.reshape(n, len(NUMERIC_FEATURES))
        num_contrib = numeric * self._w_num
        z += num_contrib.sum(axis=1)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
        if not explain:
            return p, np.zeros((n, 0)), []

        cats = self._categories(n, wb, cb, m_r, m_c, numeric)
        # Credit each distinct word of a comment with its columns' contributions.
        n_u = len(u_text)
        unit = np.zeros(n_u)
        if len(cb.inverse):
            owners = np.bincount(cb.inverse, minlength=len(cb.values))  # distinct words sharing the n-gram
            share = (c_contrib / owners)[cb.inverse]
            unit += np.bincount(np.repeat(np.arange(n_u), lens), weights=share, minlength=n_u)
        if w_ua:
            first = _first_occurrences(wb.inverse, len(wb.values))  # each column credited once
            share = w_contrib[wb.inverse[first]] / 2.0
            unit += np.bincount(np.asarray(w_ua, dtype=np.int64)[first], weights=share, minlength=n_u)
            unit += np.bincount(np.asarray(w_ub, dtype=np.int64)[first], weights=share, minlength=n_u)
        # Word positions that pushed towards the positive class, batch-wide; a repeated word counts at its
        # first occurrence (ids are handed out in first-occurrence order, so a later one is never a new maximum).
        flat = np.fromiter((u for seq in pos_u for u in seq), dtype=np.int64)
        values = unit[flat]
        if len(flat) > 1:
            values[1:] *= flat[1:] > np.maximum.accumulate(flat)[:-1]
        starts = np.cumsum([0] + [len(seq) for seq in pos_u])
        hot = np.flatnonzero(values >= MIN_CONTRIBUTION / 2)
        hot_rows = np.searchsorted(starts, hot, side="right") - 1
        hot_by_row: dict[int, list[int]] = {}
        for r, h in zip(hot_rows.tolist(), hot.tolist(), strict=True):
            hot_by_row.setdefault(r, []).append(h - int(starts[r]))
        meta_w = self._w_meta
        reasons: list[list[str]] = []
        for i, pc in enumerate(prepared):
            scores: dict[str, float] = {}
            if i in hot_by_row:
                row_values = values[starts[i] : starts[i + 1]]
                _phrases(texts[i], hot_by_row[i], row_values, scores)
            for token, j in m_tokens[i]:
                phrase = meta_phrase(token)
                scores[phrase] = scores.get(phrase, 0.0) + float(meta_w[j])
            for k, name in enumerate(NUMERIC_FEATURES):
                value = numeric_contribution(float(num_contrib[i, k]), float(numeric[i, k]), k)
                if name == "links":
                    if pc.n_links:
                        phrase = f"{pc.n_links} link{'s' if pc.n_links > 1 else ''}"
                        scores[phrase] = scores.get(phrase, 0.0) + value
                else:
                    phrase = NUMERIC_PHRASES[name]
                    scores[phrase] = scores.get(phrase, 0.0) + value
            ranked = sorted(((v, k) for k, v in scores.items() if v >= MIN_CONTRIBUTION), reverse=True)
            reasons.append([k for _, k in ranked[:MAX_REASONS]])
        return p, cats, reasons

    def _categories(
        self, n: int, wb: _Block, cb: _Block, m_r: np.ndarray, m_c: np.ndarray, numeric: np.ndarray
    ) -> np.ndarray:
        if self._heads is None:
            return np.zeros((n, 0))
        rows = np.concatenate([wb.rows, cb.rows, m_r, np.repeat(np.arange(n), numeric.shape[1])])
        cols = np.concatenate(
            [
                wb.cols,
                cb.cols + self._off_char,
                m_c + self._off_meta,
                np.tile(np.arange(numeric.shape[1]), n) + self._off_num,
            ]
        )
        values = np.concatenate([wb.values, cb.values, np.ones(len(m_c)), numeric.ravel()]).astype(np.float32)
        X = sp.csr_matrix((values, (rows, cols)), shape=(n, self.n_features))
        # float32 x float32 (C-ordered): scipy multiplies without copying the heads
        raw = np.asarray(X @ self._heads, dtype=np.float64) + self._head_params[:, 0]
        z = self._head_params[:, 1] * raw + self._head_params[:, 2]
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def _phrases(words: list[str], hot: list[int], values: np.ndarray, scores: dict[str, float]) -> None:
    """Runs of up to four adjacent words that each pushed towards the positive class (``hot`` positions)."""
    seen: set[str] = set()
    hot_set = set(hot)
    end = -1
    for i in hot:
        if i <= end:
            continue  # inside the previous run
        k = i
        while k + 1 in hot_set and k + 1 - i < MAX_PHRASE_WORDS:
            k += 1
        end = k
        phrase = " ".join(w.strip(".,;:!?\"'()[]") for w in words[i : k + 1]).strip()[:60]
        if phrase:
            label = f"phrase '{phrase}'" if k > i else f"word '{phrase}'"
            if label not in seen:  # a repeated phrase is one reason, counted once
                seen.add(label)
                scores[label] = scores.get(label, 0.0) + float(values[i : k + 1].sum())
