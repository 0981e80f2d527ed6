"""Per-comment feature preparation: normalised text, metadata tokens and bounded numeric signals.

Every metadata signal is *absent = zero*: a comment without an author, e-mail or post contributes
nothing through those features, so a linear model cannot learn "no metadata" as a label from the
mix of training sources (most public corpora carry no metadata at all).
"""

from __future__ import annotations

import functools
import math
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from classifiers.comment import CommentInput
from classifiers.common_words import common_words
from classifiers.normalize import MAX_CHARS, fold_styles, normalize_text, strip_surrogates

# What a model sees of a comment: normalisation, metadata tokens and numeric signals. Bump it whenever a change reads
# comments differently; a model fitted under another version is not the model that was measured (the registry
# takes in newer shipped starters, the models page and `bouncer models list` flag the rest for retraining).
# 1: models whose manifest has no version (up to 2026-11-28 09:00 UTC); 2: an author name's shape only, no phone
# token, quoted handles read as handles; 3: capitals count only in words written in capitals (shouting); 4: handles
# and hashtags are not counted as capitals; 5: an author name made of ordinary words reads as keywords; 6: the "www"
# of a link is not folded to "ww"; 7: no Title Case shape of the author name; 8: the link mark is a word of its
# own after a bracket or quote; 9: "fancy text" letter styles, accents of Latin letters and stacked marks folded.
FEATURES_VERSION = 9

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
_TLDS = (
    "com|net|org|info|biz|ru|xyz|top|io|co|us|uk|de|me|tk|ml|ga|cf|gq|online|site|club|shop|store|live|pw|cc|ly|be|"
    "gl|in|cn|pl|fr|it|nl|es|br|eu|tv|ws|su|vip|win|bid|loan|click|link|work|today|icu|buzz|fun|space|website|tech|"
    "app|page"
)
_BARE_DOMAIN = re.compile(rf"\b(?:[a-z0-9][a-z0-9-]{{0,62}}\.)+(?:{_TLDS})\b(?!\.\w)", re.IGNORECASE)
_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/\s]*@)?([^:/?#\s]+)", re.IGNORECASE)
# The leading look-ahead lets the scan skip to a digit, "+" or "(" before the look-behind is tried (a third faster).
_PHONE = re.compile(
    r"(?=[+(\d])(?<![\w+])(?:\+?\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)[\s.\-]?|\d{2,4}[\s.\-])\d{3,4}[\s.\-]?\d{3,4}(?!\w)"
)
# A dot before a known TLD: the cheap pre-check before the full bare-domain search.
_TLD_HINT = re.compile(rf"\.(?:{_TLDS})\b", re.IGNORECASE)
# "example(dot)com", "example [dot] co [dot] uk": a dot written out to dodge link filters, folded back before links
# are found (only in brackets and before a known TLD, so "the dot com bubble" stays prose).
_DOT_WORD = r" ?[(\[{] ?dot ?[)\]}] ?"
_SPELLED_DOT = re.compile(rf"(?<=\w){_DOT_WORD}(?=(?:[a-z0-9-]{{1,63}}{_DOT_WORD}){{0,3}}(?:{_TLDS})\b)", re.IGNORECASE)
# Every link in the text is preceded by the word "link:", so "visit idquw.tk", "visit http://idquw.tk" and
# '<a href="http://idquw.tk">visit</a>' share the n-grams around the link ("visit link"): spam that drops the
# scheme or hides the address in markup is still a comment with a link. Dev ROC-AUC of the spam sources is
# unchanged (docs/models.md); unseen YouTube videos, which write bare domains, gain.
LINK_MARK = "link:"
_ANCHOR_OPEN = re.compile(r"<a\s[^<>]{0,500}?href[^<>]{0,500}>", re.IGNORECASE)
_LINK_IN_TEXT = re.compile(rf"({LINK_MARK} )?(?:{_URL.pattern}|{_BARE_DOMAIN.pattern})", re.IGNORECASE)
_ASCII_LETTERS = string.ascii_letters.encode()
_ASCII_UPPER = string.ascii_uppercase.encode()
_ASCII_DIGITS = string.digits.encode()
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.isspace() accepts in ASCII
_LONG_DIGITS = re.compile(r"(?<!\d)\d{9,13}(?!\d)")
_WORD = re.compile(r"[^\W_]+")
# Shouting: words of two or more letters written in capitals ("I" and "Thanks Anna" are not; "OK" is, and three or
# more letters held more on dev). The ASCII pattern finds exactly the runs of the general one that are upper case,
# without a Python step per word.
_LETTER_RUN = re.compile(r"[^\W\d_]{2,}")
_SHOUTED_ASCII = re.compile(r"(?=[A-Z]{2})(?<![A-Za-z])[A-Z]{2,}(?![A-Za-z])")
# Handles and hashtags are names, not shouting: "@CNN", "#MAGA", and the "@USER" that anonymised tweets put before
# nearly every one of them.
_HANDLE_OR_TAG = re.compile(r"[@#]\w+")

FREE_MAIL = frozenset(
    "gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.fr ymail.com hotmail.com hotmail.co.uk hotmail.fr "
    "outlook.com live.com msn.com aol.com icloud.com me.com mac.com mail.com gmx.com gmx.de gmx.net web.de "
    "mail.ru bk.ru list.ru inbox.ru yandex.ru yandex.com protonmail.com proton.me qq.com 163.com 126.com "
    "sina.com rediffmail.com zoho.com tutanota.com libero.it orange.fr free.fr laposte.net t-online.de".split()
)
DISPOSABLE_MAIL = frozenset(
    "mailinator.com guerrillamail.com guerrillamail.net sharklasers.com 10minutemail.com temp-mail.org "
    "tempmail.com yopmail.com trashmail.com getnada.com dispostable.com maildrop.cc throwawaymail.com "
    "mintemail.com fakeinbox.com spamgourmet.com mailnesia.com tempail.com emailondeck.com moakt.com".split()
)

# Names of the numeric columns, in order; explanations read them.
NUMERIC_FEATURES = (
    "links",
    "link_density",
    "upper_ratio",
    "symbol_ratio",
    "digit_ratio",
    "length",
    "phones",
    "script_mix",
    "offtopic",
)


# A typical legitimate comment's numeric signals: the medians over the legitimate train comments of YouTube and
# Jigsaw (about 200 characters, a few commas, no links, no word in capitals). Reasons explain each numeric signal
# against it, so a 40-character comment is not credited with "long text" because length has a positive weight.
_TYPICAL = {"symbol_ratio": 0.078, "length": 0.62}


def numeric_reference() -> tuple[float, ...]:
    return tuple(_TYPICAL.get(name, 0.0) for name in NUMERIC_FEATURES)


@dataclass(frozen=True, slots=True)
class PreparedComment:
    """What the vectorizers consume: normalised text, metadata tokens and numeric signals."""

    text: str
    meta: str
    numeric: tuple[float, ...]
    n_links: int


def _host(url: str) -> str:
    m = _HOST.match(url.strip())
    host = m.group(1).lower().rstrip(".") if m else ""
    return host[4:] if host.startswith("www.") else host


def _script(ch: str) -> str:
    o = ord(ch)
    if o < 0x250:
        return "latin"
    if 0x370 <= o < 0x400:
        return "greek"
    if 0x400 <= o < 0x530:
        return "cyrillic"
    if 0x590 <= o < 0x600:
        return "hebrew"
    if 0x600 <= o < 0x700 or 0x750 <= o < 0x780:
        return "arabic"
    if 0x900 <= o < 0x980:
        return "devanagari"
    if 0x3040 <= o < 0x3100:
        return "kana"
    if 0x4E00 <= o < 0xA000:
        return "han"
    if 0xAC00 <= o < 0xD7B0:
        return "hangul"
    return "other"


def email_kind(email: str) -> str:
    """``free``, ``disposable``, ``corporate``, ``invalid`` or ``""`` when there is no address."""
    email = email.strip().lower()
    if not email:
        return ""
    if email.count("@") != 1 or "." not in email.rsplit("@", 1)[1]:
        return "invalid"
    domain = email.rsplit("@", 1)[1]
    if domain in DISPOSABLE_MAIL:
        return "disposable"
    if domain in FREE_MAIL or domain.split(".")[0] in {"yahoo", "hotmail", "outlook", "gmx", "yandex"}:
        return "free"
    return "corporate"


def _author_tokens(name: str) -> list[str]:
    """How the author's name reads (digits, many words, a web address, ordinary words), never who it is.

    The name's words are not features: learnt from e-mail senders and YouTube channels they were identities
    (mailing-list regulars "Tom" -2.3 logits, "Paul" -1.8; "Kate" +2.0, "Matt" +2.6), so a commenter's first
    name, and with it often their gender, moved the spam score. Who an author is belongs to the rules (trusted
    authors, block lists), how the name reads to the model. Title Case is no shape either: it stood in for brand
    names ("Cheap Flights"), which the keywords shape now reads, and it cost every commenter who writes their name
    with capitals ("Jane Doe" 0.10 against "jane" 0.07 on the same comment); without it the spam dev ROC-AUC is the
    same (.9916 / .9917).
    """
    name = unicodedata.normalize("NFKC", fold_styles(name))[:200].strip()
    if not name:
        return []
    words = _WORD.findall(name)
    tokens = []
    if any(ch.isdigit() for ch in name):
        tokens.append("author_shape:digits")
    if len(words) >= 3:
        tokens.append("author_shape:many_words")
    if _BARE_DOMAIN.search(name) or _URL.search(name):
        tokens.append("author_shape:domain")
    if _reads_as_keywords(words):
        tokens.append("author_shape:keywords")
    return tokens


def _reads_as_keywords(words: list[str]) -> bool:
    """Two or more ordinary words, with at most one other word in a name of three or more: "Cheap Flights",
    "Norton Support Number", "best seo services company"; not "Jane Doe" (``common_words``)."""
    lettered = [w.lower() for w in words if w.isalpha()]
    if len(lettered) < 2:
        return False
    common = common_words()
    others = sum(w not in common for w in lettered)
    return len(lettered) - others >= 2 and others <= (1 if len(lettered) >= 3 else 0)


def _since_post_bucket(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    for limit, name in ((0, "before_post"), (60, "1m"), (600, "10m"), (3600, "1h"), (86400, "1d")):
        if seconds < limit:
            return f"since_post:<{name}" if name != "before_post" else "since_post:before_post"
    for limit, name in ((7 * 86400, "1w"), (30 * 86400, "30d"), (365 * 86400, "1y")):
        if seconds < limit:
            return f"since_post:<{name}"
    return "since_post:>=1y"


def _mark_links(raw: str) -> str:
    """``raw`` with LINK_MARK before each link: after an anchor's opening tag, before each address in the text.

    The mark is always a word of its own: "(http://x.io)" reads "( link: http://x.io)", so the n-grams and the
    reasons see the same mark as for a link after a space."""
    if "<a" in raw or "<A" in raw:
        raw = _ANCHOR_OPEN.sub(lambda m: f"{m.group(0)} {LINK_MARK} ", raw)
    return _LINK_IN_TEXT.sub(lambda m: m.group(0) if m.group(1) else _marked(m), raw)


def _marked(m: re.Match[str]) -> str:
    glued = m.start() > 0 and not m.string[m.start() - 1].isspace()
    return f"{' ' if glued else ''}{LINK_MARK} {m.group(0)}"


PREPARED_CACHE_SIZE = 4096


def prepare_comment(comment: CommentInput | str | dict[str, Any]) -> PreparedComment:
    """Extract everything the model needs from one comment (robust to any input).

    Results for ``CommentInput`` values are cached (LRU, keyed by the comment's fields), so the spam and
    the abuse model scoring the same batch prepare each comment once.
    """
    if isinstance(comment, str):
        comment = CommentInput(text=comment)
    elif isinstance(comment, dict):
        comment = CommentInput(**comment)
    try:
        return _prepare_cached(comment)
    except TypeError:  # a field of an unhashable type: still prepared, just not cached
        return _prepare(comment)


def prepare_many(comments: Iterable[CommentInput | str | dict[str, Any]]) -> list[PreparedComment]:
    return [prepare_comment(c) for c in comments]


def _prepare(comment: CommentInput) -> PreparedComment:
    raw = fold_styles(strip_surrogates((comment.text or "")[:MAX_CHARS]))
    lower = raw.lower()
    if "dot" in lower:
        raw = _SPELLED_DOT.sub(".", raw)  # removes brackets and "dot" only: `lower` still answers "www?" below
    tokens: list[str] = []

    links = _URL.findall(raw) if ("//" in raw or "www" in lower) else []
    bare = _BARE_DOMAIN.findall(_URL.sub(" ", raw) if links else raw) if _TLD_HINT.search(raw) else []
    hosts = [_host(u) for u in links] + [d.lower() for d in bare]
    hosts = [h for h in hosts if h]
    n_links = len(links) + len(bare)
    text = normalize_text(_mark_links(raw) if n_links else raw, styles_folded=True)
    for host in dict.fromkeys(hosts[:10]):
        tokens.append(f"link_domain:{host}")
        tokens.append(f"link_tld:{host.rsplit('.', 1)[-1]}")

    if comment.author_url.strip():
        tokens.append("author_url:present")
        host = _host(strip_surrogates(comment.author_url[:500]))
        if host:
            tokens.append(f"author_url_tld:{host.rsplit('.', 1)[-1]}")
    email = strip_surrogates(comment.author_email[:320])
    kind = email_kind(email)
    if kind:
        tokens.append(f"email:{kind}")
        if kind != "invalid":
            tokens.append(f"email_tld:{email.strip().lower().rsplit('.', 1)[-1][:20]}")
    tokens.extend(_author_tokens(strip_surrogates(comment.author_name[:200])))
    if comment.honeypot:
        tokens.append("honeypot:filled")
    bucket = _since_post_bucket(comment.seconds_since_post)
    if bucket:
        tokens.append(bucket)
    if comment.type and comment.type not in ("comment", "reply"):
        tokens.append(f"type:{comment.type.strip().lower()[:20]}")

    n = max(len(raw), 1)
    unnamed = _HANDLE_OR_TAG.sub(" ", raw) if ("@" in raw or "#" in raw) else raw
    if raw.isascii():  # bytes.translate deletes a class of characters in C: same counts as the str methods
        b = raw.encode("ascii")
        n_letters = len(b) - len(b.translate(None, _ASCII_LETTERS))
        upper = len(b) - len(b.translate(None, _ASCII_UPPER))
        digits = len(b) - len(b.translate(None, _ASCII_DIGITS))
        spaces = len(b) - len(b.translate(None, _ASCII_SPACE))
        symbols = len(b) - n_letters - digits - spaces
        shouted = sum(map(len, _SHOUTED_ASCII.findall(unnamed))) if upper >= 2 else 0
    else:
        n_letters = sum(map(str.isalpha, raw))
        upper = sum(map(str.isupper, raw))
        digits = sum(map(str.isdigit, raw))
        symbols = n - sum(map(str.isalnum, raw)) - sum(map(str.isspace, raw)) if raw else 0
        shouted = sum(len(w) for w in _LETTER_RUN.findall(unnamed) if w.isupper()) if upper >= 2 else 0

    n_phones = len(_PHONE.findall(raw)) + len(_LONG_DIGITS.findall(raw)) if digits >= 8 else 0
    n_words = max(len(raw.split()), 1)
    if raw.isascii():
        scripts = {"latin"} if n_letters else set()
    else:  # each distinct letter once: a long comment has few distinct characters
        scripts = {_script(ch) for ch in set(raw[:1000]) if ch.isalpha()}
    scripts.discard("other")
    if len(scripts) > 1:
        tokens.append("scripts:" + "+".join(sorted(scripts)))
    elif scripts and "latin" not in scripts:
        tokens.append(f"script:{scripts.pop()}")

    offtopic = 0.0
    post_text = f"{comment.post_title} {comment.post_excerpt}".strip()
    if post_text and text:
        post_words = set(normalize_text(post_text).split())
        words = set(text.split())
        overlap = len(words & post_words) / max(min(len(words), len(post_words)), 1)
        offtopic = 1.0 - min(overlap * 4.0, 1.0)  # sharing a quarter of the words counts as on-topic

    numeric = (
        min(math.log1p(n_links) / math.log(11), 1.0),
        min(n_links / n_words, 1.0),
        shouted / n_letters if n_letters >= 8 else 0.0,
        min(symbols / n * 2.0, 1.0),
        min(digits / n * 2.0, 1.0),
        math.log1p(len(raw)) / math.log1p(MAX_CHARS),
        min(n_phones, 3) / 3.0,
        min(len(scripts) - 1, 2) / 2.0 if scripts else 0.0,
        offtopic,
    )
    return PreparedComment(text=text, meta=" ".join(tokens), numeric=numeric, n_links=n_links)


_prepare_cached = functools.lru_cache(maxsize=PREPARED_CACHE_SIZE)(_prepare)


class CommentPreparer(TransformerMixin, BaseEstimator):
    """Stateless first pipeline step: comments (``CommentInput``, dict or str) -> ``PreparedComment``."""

    def fit(self, X: Sequence[Any], y: Any = None) -> CommentPreparer:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless

    def transform(self, X: Iterable[Any]) -> list[PreparedComment]:
        return [prepare_comment(c) for c in X]

    def __sklearn_tags__(self):  # returns sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        return tags


class FieldSelector(TransformerMixin, BaseEstimator):
    """Pick the ``text`` or ``meta`` string of each prepared comment."""

    def __init__(self, field: str = "text") -> None:
        self.field = field

    def fit(self, X: Sequence[PreparedComment], y: Any = None) -> FieldSelector:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless

    def transform(self, X: Sequence[PreparedComment]) -> list[str]:
        return [getattr(c, self.field) for c in X]


class NumericFeatures(TransformerMixin, BaseEstimator):
    """Bounded numeric signals (all in [0, 1], zero when unknown) as a sparse matrix.

    ``ignore`` names signals a model does not use: their column is always zero, so their weight is zero.
    """

    def __init__(self, ignore: tuple[str, ...] = ()) -> None:
        self.ignore = ignore

    def fit(self, X: Sequence[PreparedComment], y: Any = None) -> NumericFeatures:
        ignored_columns(self)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless

    def transform(self, X: Sequence[PreparedComment]) -> sp.csr_matrix:
        data = np.asarray([c.numeric for c in X], dtype=np.float32).reshape(len(X), len(NUMERIC_FEATURES))
        data[:, ignored_columns(self)] = 0.0
        return sp.csr_matrix(data)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([f"numeric:{n}" for n in NUMERIC_FEATURES], dtype=object)


def ignored_columns(numeric: NumericFeatures) -> list[int]:
    """Column indices of the signals ``numeric`` ignores (none for artifacts saved before ``ignore`` existed)."""
    ignore = getattr(numeric, "ignore", ())
    unknown = sorted(set(ignore) - set(NUMERIC_FEATURES))
    if unknown:
        raise ValueError(f"unknown numeric signals {unknown}; expected some of {NUMERIC_FEATURES}")
    return [NUMERIC_FEATURES.index(name) for name in ignore]
