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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
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
CACHE_SIZE = 200_000  # distinct words / tokens / bigrams / metadata tokens per hashing set-up (≈ 40 MB when full)
_ID_BITS = 32  # word and token ids (< CACHE_SIZE + a batch) in packed int64 keys
_ID_MASK = (1 << _ID_BITS) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: multiplicative hashing of int keys

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


class _Buffer:
    """A growing 1-d integer array (amortised appends); entries once written never change."""

    __slots__ = ("data", "size")

    def __init__(self, dtype: type) -> None:
        self.data: np.ndarray = np.zeros(1024, dtype=dtype)
        self.size = 0

    def extend(self, values: Sequence[int] | np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.zeros(max(end, 2 * len(self.data)), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def view(self) -> np.ndarray:
        return self.data[: self.size]


class _IntMap:
    """Non-negative int64 keys to int64 values: open addressing (linear probing), vectorised look-ups and inserts."""

    _MIN_BITS = 12

    def __init__(self) -> None:
        self._allocate(self._MIN_BITS)

    def _allocate(self, bits: int) -> None:
        self._bits = bits
        self._keys = np.full(1 << bits, -1, dtype=np.int64)  # -1: free slot
        self._values = np.zeros(1 << bits, dtype=np.int64)
        self.size = 0

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _GOLDEN) >> np.uint64(64 - self._bits)).astype(np.int64)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, -1 for keys not in the map."""
        out = np.full(len(keys), -1, dtype=np.int64)
        todo = np.arange(len(keys))
        slots = self._slots(keys)
        mask = (1 << self._bits) - 1
        while len(todo):
            found = self._keys[slots]
            hit = found == keys[todo]
            out[todo[hit]] = self._values[slots[hit]]
            more = ~hit & (found >= 0)
            todo, slots = todo[more], (slots[more] + 1) & mask
        return out

    def insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add distinct ``keys`` that are not in the map yet."""
        if 2 * (self.size + len(keys)) > len(self._keys):
            old = self._keys >= 0
            old_keys, old_values = self._keys[old], self._values[old]
            bits = max(self._MIN_BITS, (2 * (self.size + len(keys))).bit_length())
            self._allocate(bits)
            keys, values = np.concatenate([old_keys, keys]), np.concatenate([old_values, values])
        self.size += len(keys)
        todo = np.arange(len(keys))
        slots = self._slots(keys)
        mask = (1 << self._bits) - 1
        while len(todo):
            free = np.flatnonzero(self._keys[slots] < 0)
            _, first = np.unique(slots[free], return_index=True)  # one key per free slot and round
            won = free[first]
            self._values[slots[won]] = values[todo[won]]
            self._keys[slots[won]] = keys[todo[won]]
            rest = np.ones(len(todo), dtype=bool)
            rest[won] = False
            todo, slots = todo[rest], (slots[rest] + 1) & mask


class _Vocab:
    """One generation of a hasher's word caches: words and tokens get integer ids, their columns live in flat arrays.

    Word ``k`` has the char-block columns ``char_cols[char_start[k] : char_start[k] + char_len[k]]`` (distinct, with
    ``char_counts`` occurrences) and the tokens ``tok_ids`` / word-block columns ``tok_cols`` in
    ``[tok_start[k] : tok_start[k] + tok_len[k]]``. Bigram columns are cached by token-id pair (``a << 32 | b``).
    """

    def __init__(self) -> None:
        self.word_ids: dict[str, int] = {}
        self.token_ids: dict[str, int] = {}
        self.tokens: list[str] = []
        self.bigrams = _IntMap()
        self.char_start, self.char_len = _Buffer(np.int64), _Buffer(np.int64)
        self.char_cols, self.char_counts = _Buffer(np.int32), _Buffer(np.int32)
        self.tok_start, self.tok_len = _Buffer(np.int64), _Buffer(np.int64)
        self.tok_ids, self.tok_cols = _Buffer(np.int64), _Buffer(np.int32)


@dataclass(frozen=True, slots=True)
class _Words:
    """The words of a batch resolved against one cache generation (a consistent snapshot of its arrays)."""

    ids: np.ndarray  # word id of each word position of the batch
    vocab: _Vocab
    char_start: np.ndarray
    char_len: np.ndarray
    char_cols: np.ndarray
    char_counts: np.ndarray
    tok_start: np.ndarray
    tok_len: np.ndarray
    tok_ids: np.ndarray
    tok_cols: np.ndarray


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
        self._vocab = _Vocab()
        self._meta: dict[str, int] = {}
        self._lock = threading.Lock()

    def words(self, words: list[str]) -> _Words:
        """Word ids of ``words`` (hashing the ones not seen yet) with the arrays they index."""
        with self._lock:
            vocab = self._vocab
            if len(vocab.word_ids) >= CACHE_SIZE or len(vocab.tokens) >= CACHE_SIZE:
                vocab = self._vocab = _Vocab()  # crude but bounded; refills from the next comments
            ids = list(map(vocab.word_ids.get, words))
            if None in ids:
                self._add_words(vocab, [w for w, k in zip(words, ids, strict=True) if k is None])
                ids = list(map(vocab.word_ids.__getitem__, words))
            return _Words(
                np.array(ids, dtype=np.int64),
                vocab,
                vocab.char_start.view(),
                vocab.char_len.view(),
                vocab.char_cols.view(),
                vocab.char_counts.view(),
                vocab.tok_start.view(),
                vocab.tok_len.view(),
                vocab.tok_ids.view(),
                vocab.tok_cols.view(),
            )

    def _add_words(self, vocab: _Vocab, words: list[str]) -> None:
        char_len: list[int] = []
        tok_len: list[int] = []
        char_cols: list[np.ndarray] = []
        char_counts: list[np.ndarray] = []
        tok_ids: list[int] = []
        tok_cols: list[int] = []
        for w in dict.fromkeys(words):
            vocab.word_ids[w] = len(vocab.word_ids)
            grams = self._char_analyzer(w)
            cols, counts = np.unique(
                np.fromiter((hashed_index(g, self.n_char) for g in grams), dtype=np.int64, count=len(grams)),
                return_counts=True,
            )
            char_cols.append(cols)
            char_counts.append(counts)
            char_len.append(len(cols))
            tokens = self._tokenize(w)
            for t in tokens:
                k = vocab.token_ids.get(t)
                if k is None:
                    k = vocab.token_ids[t] = len(vocab.tokens)
                    vocab.tokens.append(t)
                tok_ids.append(k)
                tok_cols.append(hashed_index(t, self.n_word))
            tok_len.append(len(tokens))
        vocab.char_start.extend(vocab.char_cols.size + np.cumsum([0] + char_len[:-1]))
        vocab.char_len.extend(char_len)
        vocab.char_cols.extend(np.concatenate(char_cols))
        vocab.char_counts.extend(np.concatenate(char_counts))
        vocab.tok_start.extend(vocab.tok_ids.size + np.cumsum([0] + tok_len[:-1]))
        vocab.tok_len.extend(tok_len)
        vocab.tok_ids.extend(tok_ids)
        vocab.tok_cols.extend(tok_cols)

    def bigrams(self, words: _Words, pairs: np.ndarray) -> np.ndarray:
        """Word-block columns of the bigrams with token-id pairs ``pairs`` (``a << 32 | b``) of ``words``' ids."""
        vocab = words.vocab
        with self._lock:
            if vocab.bigrams.size >= CACHE_SIZE:
                vocab.bigrams = _IntMap()
            cols = vocab.bigrams.get(pairs)
            missing = cols < 0
            if missing.any():
                new = np.unique(pairs[missing])
                tokens = vocab.tokens
                new_cols = np.fromiter(
                    (
                        hashed_index(f"{tokens[k >> _ID_BITS]} {tokens[k & _ID_MASK]}", self.n_word)
                        for k in new.tolist()
                    ),
                    dtype=np.int64,
                    count=len(new),
                )
                vocab.bigrams.insert(new, new_cols)
                cols[missing] = new_cols[np.searchsorted(new, pairs[missing])]
        return cols

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
    first: np.ndarray  # for each distinct entry, its first raw entry


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + k) for s, k in zip(starts, lengths)])`` without the Python loop."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - ends + lengths, lengths)


def _sum_by_key(keys: np.ndarray, counts: np.ndarray | None, key_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``keys`` (sorted) and the sum of the positive integer ``counts`` (``None``: ones) of each.

    Sorting is the only O(n log n) step; the counts ride along in the low bits of the sorted values (no argsort).
    """
    spare = 63 - key_bits
    if len(keys) == 0:
        return keys, np.zeros(0, dtype=np.int64)
    if counts is None:
        ordered = np.sort(keys)
        amounts = None
    elif spare > 0 and int(counts.max()) < 1 << spare:
        packed = (keys << spare) | counts
        packed.sort()
        ordered, amounts = packed >> spare, packed & ((1 << spare) - 1)
    else:  # counts too large to pack: sort with a permutation
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, np.bincount(inverse.ravel(), weights=counts).astype(np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    if amounts is None:
        sums = np.diff(starts, append=len(ordered))
    else:
        sums = np.add.reduceat(amounts, starts)
    return ordered[starts], sums


def _tf_idf(tf: np.ndarray, cols: np.ndarray, idf: np.ndarray, sub: bool) -> np.ndarray:
    """TfidfTransformer's arithmetic before the norm: (log) term frequency × idf."""
    return (np.log(tf) + 1.0 if sub else tf.astype(np.float64)) * idf[cols]


def _tfidf_block(
    keys: np.ndarray, counts: np.ndarray | None, col_bits: int, n_rows: int, idf: np.ndarray, sub: bool
) -> _Block:
    """Sum duplicate (row, column) entries (``row << col_bits | column``), then log tf, × idf, row l2 norm."""
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    tf = np.bincount(inverse, weights=counts, minlength=len(distinct))
    r, c = distinct >> col_bits, distinct & ((1 << col_bits) - 1)
    values = _tf_idf(tf, c, idf, sub)
    norms = np.sqrt(np.bincount(r, weights=values * values, minlength=n_rows))
    values /= norms[r]
    return _Block(r, c, values, inverse, first)


def _block_logit(
    keys: np.ndarray, tf: np.ndarray, col_bits: int, n_rows: int, idf: np.ndarray, sub: bool, w: np.ndarray
) -> np.ndarray:
    """Per row, the block's share of the logit: ``w · x`` for the l2-normalised TF-IDF row ``x``."""
    r, c = keys >> col_bits, keys & ((1 << col_bits) - 1)
    values = _tf_idf(tf, c, idf, sub)
    norms = np.sqrt(np.bincount(r, weights=values * values, minlength=n_rows))
    dots = np.bincount(r, weights=values * w[c], minlength=n_rows)
    return np.divide(dots, norms, out=np.zeros(n_rows), where=norms > 0)


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
        self._word_bits, self._char_bits = (n_word - 1).bit_length(), (n_char - 1).bit_length()
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
        texts = [pc.text.split() for pc in prepared]
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
        words = hasher.words(list(chain.from_iterable(texts)))
        row_bits = max(n - 1, 0).bit_length()  # keys below are (row << column bits) | column
        pos_rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        # Units: the distinct words of each comment (sorted by row, then word id), with their multiplicity.
        pos_keys = (pos_rows << _ID_BITS) | words.ids
        if explain:
            units, unit_first, pos_unit, mult = np.unique(
                pos_keys, return_index=True, return_inverse=True, return_counts=True
            )
            pos_unit = pos_unit.ravel()
        else:
            units, mult = _sum_by_key(pos_keys, None, row_bits + _ID_BITS)
        u_rows, u_ids = units >> _ID_BITS, units & _ID_MASK
        # Char block: each unit's distinct n-grams, counted once per occurrence of the word.
        c_len = words.char_len[u_ids]
        c_idx = _ranges(words.char_start[u_ids], c_len)
        c_keys = (np.repeat(u_rows, c_len) << self._char_bits) | words.char_cols[c_idx]
        c_counts = words.char_counts[c_idx] * np.repeat(mult, c_len)
        # Word block: the tokens of every word position in order, then the bigrams of adjacent tokens of a comment.
        t_len = words.tok_len[words.ids]
        t_idx = _ranges(words.tok_start[words.ids], t_len)
        t_rows = np.repeat(pos_rows, t_len)
        w_keys = (t_rows << self._word_bits) | words.tok_cols[t_idx]
        b_first = np.zeros(0, dtype=np.int64)  # token index of each bigram's first token
        if self._bigrams and len(t_rows) > 1:
            b_first = np.flatnonzero(t_rows[1:] == t_rows[:-1])
            tids = words.tok_ids[t_idx]
            b_cols = hasher.bigrams(words, (tids[b_first] << _ID_BITS) | tids[b_first + 1])
            w_keys = np.concatenate([w_keys, (t_rows[b_first] << self._word_bits) | b_cols])
        m_rows: list[int] = []
        m_cols: list[int] = []
        m_tokens: list[list[tuple[str, int]]] = []
        for i, pc in enumerate(prepared):
            if pc.meta:
                tokens = list(dict.fromkeys(pc.meta.split()))
                cols = [hasher.meta(t) for t in tokens]
                m_tokens.append(list(zip(tokens, cols, strict=True)))
                for j in dict.fromkeys(cols):
                    m_rows.append(i)
                    m_cols.append(j)
            else:
                m_tokens.append([])
        m_r = np.asarray(m_rows, dtype=np.int64)
        m_c = np.asarray(m_cols, dtype=np.int64)
        numeric = np.asarray([pc.numeric for pc in prepared], dtype=np.float32).astype(np.float64)
        numeric = numeric.reshape(n, len(NUMERIC_FEATURES))
        num_contrib = numeric * self._w_num

        z = np.full(n, self._bias)
        z += np.bincount(m_r, weights=self._w_meta[m_c], minlength=n)
        z += num_contrib.sum(axis=1)
        if not explain:  # only the per-row sums: no permutation to keep
            word_tf = _sum_by_key(w_keys, None, row_bits + self._word_bits)
            char_tf = _sum_by_key(c_keys, c_counts, row_bits + self._char_bits)
            z += _block_logit(*word_tf, self._word_bits, n, self._idf_word, self._sub_word, self._w_word)
            z += _block_logit(*char_tf, self._char_bits, n, self._idf_char, self._sub_char, self._w_char)
            return _sigmoid(z), np.zeros((n, 0)), []

        wb = _tfidf_block(w_keys, None, self._word_bits, n, self._idf_word, self._sub_word)
        w_contrib = wb.values * self._w_word[wb.cols]
        z += np.bincount(wb.rows, weights=w_contrib, minlength=n)
        cb = _tfidf_block(c_keys, c_counts, self._char_bits, n, self._idf_char, self._sub_char)
        c_contrib = cb.values * self._w_char[cb.cols]
        z += np.bincount(cb.rows, weights=c_contrib, minlength=n)
        p = _sigmoid(z)
        cats = self._categories(n, wb, cb, m_r, m_c, numeric)
        # Credit each unit with its columns' contributions.
        n_u = len(units)
        unit = np.zeros(n_u)
        if len(cb.inverse):
            owners = np.bincount(cb.inverse, minlength=len(cb.values))  # units sharing the n-gram
            share = (c_contrib / owners)[cb.inverse]
            unit += np.bincount(np.repeat(np.arange(n_u), c_len), weights=share, minlength=n_u)
        if len(wb.inverse):  # each column credited once, at its first entry: a token's word, or half to each word
            tok_unit = np.repeat(pos_unit, t_len)  # of a bigram
            share = w_contrib / 2.0
            for owner in (tok_unit[b_first], tok_unit[b_first + 1]):
                unit += np.bincount(np.concatenate([tok_unit, owner])[wb.first], weights=share, minlength=n_u)
        # Word positions that pushed towards the positive class; a repeated word counts at its first occurrence.
        values = unit[pos_unit] * (unit_first[pos_unit] == np.arange(len(pos_unit)))
        starts = np.concatenate(([0], np.cumsum(lengths)))
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
        return _sigmoid(z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
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
