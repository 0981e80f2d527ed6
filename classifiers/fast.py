"""Fast scoring with reasons: the fitted pipeline's arithmetic, done per batch with numpy on cached hashes.

``build_pipeline`` stays the model definition (training, persistence, ``Pipeline.predict_proba``).
``FastScorer`` reads the fitted parameters of such a pipeline and reproduces its probabilities (to float
rounding; the tests check it) without sklearn's per-call validation and FeatureUnion plumbing:

- n-grams are hashed once per distinct *word* and cached: ``char_wb`` n-grams never cross a space and the
  word tokens of a text are the tokens of its space-separated words, so a comment's columns are the union of
  its words' columns (plus its word bigrams). Words and tokens get integer ids and their columns live in flat
  arrays, so per batch the only per-word Python is one dictionary look-up; the columns, bigram pairs and term
  counts are numpy index arithmetic, bigram columns come from a numpy hash map keyed by token-id pair. The
  caches are shared by every model with the same hashing set-up (the spam and abuse models);
- TF-IDF, l2 norms, the calibrated logit and the category heads are a handful of array operations per batch.
  ``predict_proba`` only needs per-comment sums, so it groups the (comment, column) entries with a plain sort
  (the counts packed into the sorted values) instead of ``np.unique``'s permutation;
- everything before the model's weights (columns, term frequencies, word positions) is one ``_Batch``: the
  next model scoring the same prepared comments (the abuse model after the spam model) reuses it;
- explanations reuse the same arrays: a column's contribution is ``calibrated weight × value``; a char
  n-gram's contribution is split between the comment's words that contain it, a bigram's between its two
  words; runs of words that push towards the positive class read as one phrase. Only those words are
  turned back into text, so the reasons quote the comment ("phrase 'check out my channel'").
"""

from __future__ import annotations

import operator
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
from classifiers.features import (
    LINK_MARK,
    NUMERIC_FEATURES,
    NumericFeatures,
    PreparedComment,
    ignored_columns,
    numeric_reference,
)

MAX_REASONS = 5
MIN_CONTRIBUTION = 0.05  # in calibrated logit units; below this a feature barely moved the score
MAX_PHRASE_WORDS = 4
CACHE_SIZE = 200_000  # distinct words / tokens / bigrams / metadata tokens per hashing set-up (≈ 110 MB when full)
_ID_BITS = 32  # word and token ids (< CACHE_SIZE + a batch) in packed int64 keys
_ID_MASK = (1 << _ID_BITS) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: multiplicative hashing of int keys
_CHUNK = 1 << 16  # entries per step of the category heads' product

# A numeric signal's reason says which way the comment differs from a typical one: a signal with a negative weight
# pushes towards the positive class when the comment has *less* of it ("Subscribe to my channel please, thanks" has
# fewer symbols than usual, and was told "many symbols"). Only signals with a typical value above zero can be below it.
_NUMERIC_PHRASES = {
    "link_density": "many links for its length",
    "upper_ratio": "words in capital letters",
    "symbol_ratio": "many symbols",
    "digit_ratio": "many digits",
    "length": "long text",
    "phones": "phone number",
    "script_mix": "mixes alphabets",
    "offtopic": "off-topic for the post",
}
_NUMERIC_PHRASES_BELOW_TYPICAL = {
    "symbol_ratio": "few symbols",
    "length": "short text",
}
_MOSTLY_CAPITALS = 0.5  # share of the letters


_AUTHOR_SHAPE_PHRASES = {
    "keywords": "author name reads like an ad",
    "domain": "author name is a web address",
    "digits": "digits in the author name",
    "many_words": "author name of many words",
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
    if key == "author_shape":
        return _AUTHOR_SHAPE_PHRASES.get(value, "author name")
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
    if key in ("scripts", "script"):
        return f"written in {value.replace('+', ' and ')}"
    if key == "type":
        return f"a {value}"
    return token


_NUMERIC_REFERENCE = numeric_reference()
_NUMERIC_REFERENCE_ARRAY = np.asarray(_NUMERIC_REFERENCE)


def numeric_phrase(name: str, value: float) -> str:
    """A numeric signal's reason in a moderator's words, for a comment whose signal has ``value``."""
    if value < _NUMERIC_REFERENCE[NUMERIC_FEATURES.index(name)]:
        return _NUMERIC_PHRASES_BELOW_TYPICAL[name]
    if name == "upper_ratio" and value >= _MOSTLY_CAPITALS:
        return "mostly capital letters"
    return _NUMERIC_PHRASES[name]


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
    """Non-negative int64 keys to int32 values: open addressing (linear probing), vectorised look-ups and inserts."""

    _MIN_BITS = 12

    def __init__(self) -> None:
        self._allocate(self._MIN_BITS)

    def _allocate(self, bits: int) -> None:
        self._bits = bits
        self._keys = np.full(1 << bits, -1, dtype=np.int64)  # -1: free slot
        self._values = np.zeros(1 << bits, dtype=np.int32)
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
        if 4 * (self.size + len(keys)) > len(self._keys):  # at most a quarter full: short probe runs
            old = self._keys >= 0
            old_keys, old_values = self._keys[old], self._values[old]
            bits = max(self._MIN_BITS, (4 * (self.size + len(keys))).bit_length())
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
        self.last_batch: _Batch | None = None  # the last batch scored, for the next model scoring the same one

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


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + k) for s, k in zip(starts, lengths)])`` without the Python loop."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - ends + lengths, lengths)


def _sum_by_key(keys: np.ndarray, counts: np.ndarray | None, key_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``keys`` (non-negative, below ``2**key_bits``; sorted) and the sum of their integer ``counts``.

    ``counts=None`` counts occurrences. Sorting is the only O(n log n) step: the counts ride along in the low bits
    of the sorted values, so no permutation (argsort) is needed.
    """
    if len(keys) == 0:
        return keys, np.zeros(0, dtype=np.int64)
    spare = 63 - key_bits
    spare32 = 32 - key_bits  # 32-bit values sort about twice as fast (batches of up to 64 comments fit)
    if counts is None:
        ordered = np.sort(keys.astype(np.uint32)).astype(np.int64) if spare32 >= 0 else np.sort(keys)
        amounts = None
    elif spare32 > 0 and int(counts.max()) < 1 << spare32:
        packed32 = ((keys << spare32) | counts).astype(np.uint32)
        packed32.sort()
        ordered = (packed32 >> spare32).astype(np.int64)
        amounts = (packed32 & ((1 << spare32) - 1)).astype(np.int64)
    elif spare > 0 and int(counts.max()) < 1 << spare:
        packed = (keys << spare) | counts
        packed.sort()
        ordered, amounts = packed >> spare, packed & ((1 << spare) - 1)
    else:  # counts too large to pack
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, np.bincount(inverse.ravel(), weights=counts).astype(np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sums = np.diff(starts, append=len(ordered)) if amounts is None else np.add.reduceat(amounts, starts)
    return ordered[starts], sums


_NONE = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class _Terms:
    """A block's raw (row, column) entries of a batch, summed: ``keys`` are ``row << column bits | column``, sorted."""

    keys: np.ndarray
    tf: np.ndarray  # summed counts
    first: np.ndarray  # explanations only (else empty): the first raw entry of each key
    inverse: np.ndarray  # explanations only (else empty): the key of each raw entry


def _terms(keys: np.ndarray, counts: np.ndarray | None, key_bits: int, explain: bool) -> _Terms:
    if not explain:
        return _Terms(*_sum_by_key(keys, counts, key_bits), _NONE, _NONE)
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    return _Terms(distinct, np.bincount(inverse, weights=counts, minlength=len(distinct)), first, inverse)


@dataclass(frozen=True, slots=True)
class _Batch:
    """What scoring a batch needs before any model weight: the part the spam and the abuse model share.

    *Units* are the distinct words of each comment (sorted by comment, then word id); explanations credit them.
    """

    prepared: tuple[PreparedComment, ...]
    bigrams: bool
    explain: bool
    word: _Terms
    char: _Terms
    meta_rows: np.ndarray
    meta_cols: np.ndarray
    meta_tokens: list[list[tuple[str, int]]]
    numeric: np.ndarray  # (comments, NUMERIC_FEATURES) float64
    # explanations only (else empty)
    texts: list[list[str]]  # the words of each comment
    starts: np.ndarray  # index of each comment's first word position (and the total at the end)
    n_units: int
    pos_unit: np.ndarray  # unit of each word position
    pos_first: np.ndarray  # whether the position is its unit's first occurrence
    char_unit: np.ndarray  # unit of each raw char entry
    char_owners: np.ndarray  # units sharing each char key
    word_units: tuple[np.ndarray, np.ndarray]  # per word key, the unit(s) credited (a bigram: its two words)


def _batch(
    hasher: TextHasher,
    prepared: Sequence[PreparedComment],
    bigrams: bool,
    word_bits: int,
    char_bits: int,
    explain: bool,
) -> _Batch:
    n = len(prepared)
    texts = [pc.text.split() for pc in prepared]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    words = hasher.words(list(chain.from_iterable(texts)))
    row_bits = max(n - 1, 0).bit_length()
    pos_rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    pos_keys = (pos_rows << _ID_BITS) | words.ids
    if explain:
        units, unit_first, pos_unit, mult = np.unique(
            pos_keys, return_index=True, return_inverse=True, return_counts=True
        )
        pos_unit = pos_unit.ravel()
    else:
        units, mult = _sum_by_key(pos_keys, None, row_bits + _ID_BITS)
    u_rows, u_ids = units >> _ID_BITS, units & _ID_MASK
    # Char block: each unit's distinct n-grams, counted once per occurrence of the word in its comment.
    c_len = words.char_len[u_ids]
    c_idx = _ranges(words.char_start[u_ids], c_len)
    c_keys = (np.repeat(u_rows, c_len) << char_bits) | words.char_cols[c_idx]
    char = _terms(c_keys, words.char_counts[c_idx] * np.repeat(mult, c_len), row_bits + char_bits, explain)
    # Word block: the tokens of every word position in order, then the bigrams of a comment's adjacent tokens.
    t_len = words.tok_len[words.ids]
    t_idx = _ranges(words.tok_start[words.ids], t_len)
    t_rows = np.repeat(pos_rows, t_len)
    w_keys = (t_rows << word_bits) | words.tok_cols[t_idx]
    b_first = _NONE  # token index of each bigram's first token
    if bigrams and len(t_rows) > 1:
        b_first = np.flatnonzero(t_rows[1:] == t_rows[:-1])
        tids = words.tok_ids[t_idx]
        b_cols = hasher.bigrams(words, (tids[b_first] << _ID_BITS) | tids[b_first + 1])
        w_keys = np.concatenate([w_keys, (t_rows[b_first] << word_bits) | b_cols])
    word = _terms(w_keys, None, row_bits + word_bits, explain)
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
    numeric = np.asarray([pc.numeric for pc in prepared], dtype=np.float32).astype(np.float64)
    common = (
        tuple(prepared),
        bigrams,
        explain,
        word,
        char,
        np.asarray(m_rows, dtype=np.int64),
        np.asarray(m_cols, dtype=np.int64),
        m_tokens,
        numeric.reshape(n, len(NUMERIC_FEATURES)),
    )
    if not explain:
        return _Batch(*common, [], _NONE, 0, _NONE, _NONE, _NONE, _NONE, (_NONE, _NONE))
    tok_unit = np.repeat(pos_unit, t_len)
    return _Batch(
        *common,
        texts,
        np.concatenate(([0], np.cumsum(lengths))),
        len(units),
        pos_unit,
        unit_first[pos_unit] == np.arange(len(pos_unit)),
        np.repeat(np.arange(len(units)), c_len),
        np.bincount(char.inverse, minlength=len(char.keys)),
        (
            np.concatenate([tok_unit, tok_unit[b_first]])[word.first],
            np.concatenate([tok_unit, tok_unit[b_first + 1]])[word.first],
        ),
    )


@dataclass(frozen=True, slots=True)
class _Block:
    rows: np.ndarray  # row of each distinct (row, column) entry
    cols: np.ndarray  # column within the block
    values: np.ndarray  # feature value (what the linear model multiplies)


def _tf_idf(tf: np.ndarray, cols: np.ndarray, idf: np.ndarray, sub: bool) -> np.ndarray:
    """TfidfTransformer's arithmetic before the norm: (log) term frequency × idf."""
    return (np.log(tf) + 1.0 if sub else tf.astype(np.float64)) * idf[cols]


def _tfidf_block(terms: _Terms, col_bits: int, n_rows: int, idf: np.ndarray, sub: bool) -> _Block:
    """TfidfTransformer's arithmetic: log tf, × idf, row l2 norm."""
    r, c = terms.keys >> col_bits, terms.keys & ((1 << col_bits) - 1)
    values = _tf_idf(terms.tf, c, idf, sub)
    norms = np.sqrt(np.bincount(r, weights=values * values, minlength=n_rows))
    values /= norms[r]
    return _Block(r, c, values)


def _block_logit(terms: _Terms, col_bits: int, n_rows: int, idf: np.ndarray, sub: bool, w: np.ndarray) -> np.ndarray:
    """Per row, the block's share of the logit: ``w · x`` for the l2-normalised TF-IDF row ``x``."""
    r, c = terms.keys >> col_bits, terms.keys & ((1 << col_bits) - 1)
    values = _tf_idf(terms.tf, c, idf, sub)
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
        self._w_num = w[self._off_num :].copy()
        ignored = ignored_columns(blocks["numeric"])  # zero in every fitted row; zero here whatever the weights
        self._w_num[ignored] = 0.0
        self._bias = a * float(clf.intercept_) + b
        self.categories = [str(c) for c in clf.category_names_]
        # Category heads as a dense (features x heads) float32 matrix: rows gathered per batch.
        heads = sp.csr_matrix(clf.category_coef_)
        self._heads = np.ascontiguousarray(heads.T.toarray(), dtype=np.float32) if len(self.categories) else None
        if self._heads is not None:
            self._heads[[self._off_num + k for k in ignored]] = 0.0
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
                probability=p_i, reasons=r_i, categories={name: round(c, 4) for name, c in zip(names, c_i, strict=True)}
            )
            for p_i, r_i, c_i in zip(p.tolist(), reasons, cats.tolist(), strict=True)
        ]

    def _batch(self, prepared: Sequence[PreparedComment], explain: bool) -> _Batch:
        """The batch's shared part, reused when the previous model scored the same prepared comments."""
        last = self.hasher.last_batch
        if (
            last is not None
            and last.bigrams == self._bigrams
            and (last.explain or not explain)
            and len(last.prepared) == len(prepared)
            and all(map(operator.is_, last.prepared, prepared))
        ):
            return last
        batch = _batch(self.hasher, prepared, self._bigrams, self._word_bits, self._char_bits, explain)
        self.hasher.last_batch = batch
        return batch

    def _run(
        self, prepared: Sequence[PreparedComment], explain: bool
    ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        n = len(prepared)
        batch = self._batch(prepared, explain)
        numeric = batch.numeric
        num_contrib = numeric * self._w_num
        z = np.full(n, self._bias)
        z += np.bincount(batch.meta_rows, weights=self._w_meta[batch.meta_cols], minlength=n)
        z += num_contrib.sum(axis=1)
        if not explain:  # only the per-row sums
            z += _block_logit(batch.word, self._word_bits, n, self._idf_word, self._sub_word, self._w_word)
            z += _block_logit(batch.char, self._char_bits, n, self._idf_char, self._sub_char, self._w_char)
            return _sigmoid(z), np.zeros((n, 0)), []

        wb = _tfidf_block(batch.word, self._word_bits, n, self._idf_word, self._sub_word)
        w_contrib = wb.values * self._w_word[wb.cols]
        z += np.bincount(wb.rows, weights=w_contrib, minlength=n)
        cb = _tfidf_block(batch.char, self._char_bits, n, self._idf_char, self._sub_char)
        c_contrib = cb.values * self._w_char[cb.cols]
        z += np.bincount(cb.rows, weights=c_contrib, minlength=n)
        p = _sigmoid(z)
        cats = self._categories(n, wb, cb, batch.meta_rows, batch.meta_cols, numeric)
        # Credit each unit with its columns' contributions: a char n-gram split between the units containing it,
        # a word-block column once (at its first entry), to its token's word or half to each word of a bigram.
        n_u = batch.n_units
        unit = np.zeros(n_u)
        if len(batch.char_unit):
            share = (c_contrib / batch.char_owners)[batch.char.inverse]
            unit += np.bincount(batch.char_unit, weights=share, minlength=n_u)
        for owner in batch.word_units:
            unit += np.bincount(owner, weights=w_contrib / 2.0, minlength=n_u)
        # Word positions that pushed towards the positive class; a repeated word counts at its first occurrence.
        values = unit[batch.pos_unit] * batch.pos_first
        starts = batch.starts
        hot = np.flatnonzero(values >= MIN_CONTRIBUTION / 2)
        hot_rows = np.searchsorted(starts, hot, side="right") - 1
        hot_by_row: dict[int, list[int]] = {}
        for r, h in zip(hot_rows.tolist(), hot.tolist(), strict=True):
            hot_by_row.setdefault(r, []).append(h - int(starts[r]))
        # Numeric signals relative to a typical comment (see numeric_contribution), all rows at once.
        safe = np.where(numeric == 0.0, 1.0, numeric)
        relative = np.where(numeric == 0.0, 0.0, num_contrib * (numeric - _NUMERIC_REFERENCE_ARRAY) / safe).tolist()
        values_list = values.tolist()
        meta_w = self._w_meta
        reasons: list[list[str]] = []
        for i, pc in enumerate(prepared):
            scores: dict[str, float] = {}
            if i in hot_by_row:
                _phrases(batch.texts[i], hot_by_row[i], values_list[starts[i] : starts[i + 1]], scores)
            for token, j in batch.meta_tokens[i]:
                phrase = meta_phrase(token)
                scores[phrase] = scores.get(phrase, 0.0) + float(meta_w[j])
            for col, (name, value) in enumerate(zip(NUMERIC_FEATURES, relative[i], strict=True)):
                if name == "links":
                    if pc.n_links:
                        phrase = f"{pc.n_links} link{'s' if pc.n_links > 1 else ''}"
                        scores[phrase] = scores.get(phrase, 0.0) + value
                elif value:
                    phrase = numeric_phrase(name, float(numeric[i, col]))
                    scores[phrase] = scores.get(phrase, 0.0) + value
            ranked = sorted(((v, k) for k, v in scores.items() if v >= MIN_CONTRIBUTION), reverse=True)
            reasons.append([k for _, k in ranked[:MAX_REASONS]])
        return p, cats, reasons

    def _categories(
        self, n: int, wb: _Block, cb: _Block, m_r: np.ndarray, m_c: np.ndarray, numeric: np.ndarray
    ) -> np.ndarray:
        if self._heads is None:
            return np.zeros((n, 0))
        # X @ heads without building a sparse X: each block's entries are sorted by row, so a segment sum per
        # block (in chunks: a huge batch does not hold entries x heads products at once).
        heads = self._heads
        raw = numeric @ heads[self._off_num :].astype(np.float64)
        for rows, cols, values in (
            (wb.rows, wb.cols, wb.values.astype(np.float32)),  # the pipeline's features are float32
            (cb.rows, cb.cols + self._off_char, cb.values.astype(np.float32)),
            (m_r, m_c + self._off_meta, None),
        ):
            for lo in range(0, len(rows), _CHUNK):
                r = rows[lo : lo + _CHUNK]
                products = heads[cols[lo : lo + _CHUNK]]
                if values is not None:
                    products *= values[lo : lo + _CHUNK, None]
                starts = np.flatnonzero(np.concatenate(([True], r[1:] != r[:-1])))
                raw[r[starts]] += np.add.reduceat(products, starts, axis=0, dtype=np.float64)
        raw += self._head_params[:, 0]
        z = self._head_params[:, 1] * raw + self._head_params[:, 2]
        return _sigmoid(z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def phrase_label(words: Sequence[str]) -> str:
    """The reason for a run of the comment's words: "phrase '…'" or "word '…'", quoting them without the link
    mark the preparer put before each link (it is not the commenter's word); the mark alone is "a link in the text"."""
    kept = [w for w in (w.strip(".,;:!?\"'()[]") for w in words if w != LINK_MARK) if w]
    if not kept:
        return "a link in the text" if LINK_MARK in words else ""
    text = " ".join(kept)[:60]
    return f"phrase '{text}'" if len(kept) > 1 else f"word '{text}'"


def _phrases(words: list[str], hot: list[int], values: list[float], scores: dict[str, float]) -> None:
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
        label = phrase_label(words[i : k + 1])
        if label and label not in seen:  # a repeated phrase is one reason, counted once
            seen.add(label)
            scores[label] = scores.get(label, 0.0) + sum(values[i : k + 1])
