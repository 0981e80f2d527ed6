"""Text normalisation that undoes the usual obfuscations before n-grams are counted.

Order matters: the letter styles of "fancy text" generators, accents of Latin letters and stacked marks first
(``fold_styles``), then Unicode compatibility folding, then invisible characters and leftover marks, then per-token
homoglyph and leetspeak folding (only inside tokens that mix scripts or mix letters with look-alike digits, so real
Cyrillic text and real numbers survive), then case, repeats and s p a c e d letters.
"""

from __future__ import annotations

import html
import re
import unicodedata

MAX_CHARS = 5000  # features look at the first 5,000 characters: huge inputs stay fast

# Cyrillic / Greek / other letters that render like Latin ones (lower-case; input is case-folded first).
_HOMOGLYPHS = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h",
    "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y", "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k",
    "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ı": "i", "ℓ": "l", "ց": "g",
    "օ": "o", "ս": "u", "ѵ": "v",
}  # fmt: skip
_HOMOGLYPH_TABLE = str.maketrans(_HOMOGLYPHS)


def _alphabet_from(first: int) -> dict[str, str]:
    """The 26 code points from ``first`` on, as a to z."""
    return {chr(first + i): chr(ord("a") + i) for i in range(26)}


# Letters that only ever write Latin in a style, which NFKC leaves as they are (or turns into "(a)"): the "fancy
# text" of generators that dodge filters. Always folded, in any word: no language writes words in them.
_STYLED = str.maketrans(
    {
        **_alphabet_from(0x249C),  # ⒜ parenthesized small (NFKC would give "(a)")
        **_alphabet_from(0x1F110),  # 🄐 parenthesized capital
        **_alphabet_from(0x1F150),  # 🅐 negative circled
        **_alphabet_from(0x1F170),  # 🅰 negative squared
        # small capitals and their superscripts (ᶦ: NFKC would give ɪ), and Latin alpha and script g
        "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
        "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ꞯ": "q", "ʀ": "r", "ꜱ": "s", "ᴛ": "t",
        "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ᶦ": "i", "ᶫ": "l", "ᶰ": "n", "ᶸ": "u", "ɑ": "a",
        "ɡ": "g",
    }
)  # fmt: skip
_LEET_TABLE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_CHARS = frozenset("013457@$")

# Combining marks of the Latin, Greek and Cyrillic scripts and of symbols (other scripts' marks are their own blocks).
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
# Accents of Latin letters ("ídíót" reads "idiot", "café" "cafe": accents are easy to add and often left out), and
# three or more marks on any character ("Zalgo" text: no language stacks more than two), in the decomposed text.
_ACCENTS = re.compile(f"(?<=[A-Za-z])[{_MARKS}]+|[{_MARKS}]{{3,}}")
_MARK = re.compile(f"[{_MARKS}]")
# Zero-width, bidi controls, soft hyphen, word joiner, BOM, variation selectors, tag characters; and the combining
# marks left after NFKC, which composes every accented letter that has a form of its own ("e" + U+0301 is "é"):
# what remains is strike-through and underline marks put on letters to break up their n-grams.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    f"\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f{_MARKS}]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Only tokens with a leetspeak character or a homoglyph can change (every other token is left as it is).
_FOLDS = re.escape("".join(sorted(_LEET_CHARS | _HOMOGLYPHS.keys())))
# Anchored at word starts, the run before the first such character taken possessively: linear time.
_TOKEN = re.compile(rf"(?<!\S)[^\s{_FOLDS}]*+[{_FOLDS}]\S*")
_NEEDS_FOLDING = re.compile(rf"[{_FOLDS}]")
# A run of three or more of one character; runs of digits ("1000") are numbers and stay.
_RUN = re.compile(r"(.)\1\1+", re.DOTALL)
# Three or more single letters separated by one space/dot/dash/star: "f r e e" -> "free".
_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_][ .*_\-]){2,}[^\W\d_](?![^\W\d_])")
# What every match of _SPACED contains (its last two letters): a cheap search that skips most comments.
_SPACED_TAIL = re.compile(r"[ .*_\-][^\W\d_][ .*_\-][^\W\d_](?![^\W\d_])")
_SPACED_SEP = re.compile(r"[ .*_\-]")
_TAG = re.compile(r"<[^<>]{0,500}>")
_URL_LIKE = re.compile(r"^(?:https?://|www\.)|\.[a-z]{2,6}(?:/|$)")


_NAME_WITH_NUMBER = re.compile(r"([a-z]+)(\d+)")
# A number with a unit or an ordinal ("10am", "3rd", "100mg", "1080p"): a quantity, not leetspeak.
_QUANTITY = re.compile(
    r"\d+(?:st|nd|rd|th|am|pm|s|k|m|g|p|x|d|h|kb|mb|gb|tb|mg|kg|km|cm|mm|ml|lb|lbs|oz|ft|hz|khz|mhz|ghz|"
    r"min|mins|hr|hrs|yr|yrs|mph|fps|kw|v|w)"
)
# A reply's "@john," or a tweet's "@user123", also quoted ('"@user: …"', "(@john)"): a handle, not leetspeak for
# "ajohn" (a leading "@" stands for "a" only inside a word, as in "c@sh").
_MENTION_OPENERS = "\"'([“‘«"
_MENTION_STARTS = frozenset("@" + _MENTION_OPENERS)
_MENTION = re.compile(rf"[{re.escape(_MENTION_OPENERS)}]*@\w{{1,30}}[.,!?;:'\")\]”’»]*")
# Pieces of a token that are folded one by one: "$85/hour" is a price and a word, "5-star" a number and a word.
_PIECE_SEPARATORS = re.compile(r"([/|+&=~\-]+)")


def _looks_like_name(core: str) -> bool:
    """'mp3', 'covid19', 'user123' are names with a number, '10am', '3rd' quantities: not leetspeak like 'fr33'."""
    if _QUANTITY.fullmatch(core):
        return True
    m = _NAME_WITH_NUMBER.fullmatch(core)
    if m is None:
        return False
    letters, digits = m.groups()
    return any(d not in _LEET_CHARS for d in digits) or (len(letters) <= 2 and len(digits) == 1)


def _fold_leet(piece: str) -> str:
    """Leetspeak to letters ("fr33", "v1agra", "c@sh", "$ex"); "2024", "10.5", "$85", "mp3", "10am" stay."""
    if not any(ch in _LEET_CHARS for ch in piece):
        return piece
    letters = sum(ch.isalpha() for ch in piece)
    if letters == 0 or piece.replace(",", "").replace(".", "").isdigit():
        return piece
    core = piece.strip(".,!?;:'\"()[]")
    if (letters >= 2 or core[:1] in "$@") and not _looks_like_name(core):
        return piece.translate(_LEET_TABLE)
    return piece


def _fold_token(token: str) -> str:
    has_ascii_letter = any("a" <= ch <= "z" for ch in token)
    if has_ascii_letter and not token.isascii():
        # Mixed scripts inside one word is the homoglyph trick; pure Cyrillic/Greek words are left alone.
        token = token.translate(_HOMOGLYPH_TABLE)
    if token[0] in _MENTION_STARTS and _MENTION.fullmatch(token):
        return token
    if _URL_LIKE.search(token):
        return token  # links keep their digits: they become domain features elsewhere
    if not any(ch in _LEET_CHARS for ch in token):
        return token
    if not _PIECE_SEPARATORS.search(token):
        return _fold_leet(token)
    return "".join(part if i % 2 else _fold_leet(part) for i, part in enumerate(_PIECE_SEPARATORS.split(token)))


def _starts_link(text: str, start: int, end: int) -> bool:
    """``text[start:end]`` is a word of its own followed by a dot: the "www" of "www.example.com", not "awww."."""
    return text.startswith(".", end) and (start == 0 or not text[start - 1].isalnum())


def _fold_run(m: re.Match[str]) -> str:
    """A run of one character folded to two ("sooooo" -> "soo", "!!!!" -> "!!"); a run of digits ("1000") stays, and
    so does the "www" of a link ("www.example.com" is the address the reasons quote, not "ww.example.com")."""
    run = m.group(0)
    if m.group(1).isdecimal() or (run == "www" and _starts_link(m.string, m.start(), m.end())):
        return run
    return m.group(1) * 2


def strip_surrogates(text: str) -> str:
    """Lone surrogates (possible from JSON ``\\ud800`` escapes) cannot be encoded or hashed: drop them."""
    return _SURROGATE.sub("", text) if not text.isascii() else text


def fold_styles(text: str) -> str:
    """Letters in the styles of "fancy text" generators as plain letters, without the accents and marks put on them:
    "ɪᴅɪᴏᴛ", "🅘🅓🅘🅞🅣", "i̶d̶i̶o̶t̶" and "ídíót" read "idiot". The comment's counts (letters, symbols, capitals) are
    taken on this text too, so that a styled comment is not a comment full of symbols."""
    if text.isascii():
        return text
    text = text.translate(_STYLED)  # cheaper than searching for one first
    if unicodedata.is_normalized("NFD", text) and not _MARK.search(text):
        return text  # no accented letter and no mark: most non-ASCII comments (curly quotes, emoji)
    return unicodedata.normalize("NFC", _ACCENTS.sub("", unicodedata.normalize("NFD", text)))


def normalize_text(text: str, max_chars: int = MAX_CHARS, *, styles_folded: bool = False) -> str:
    """Return the canonical form of ``text`` that the n-gram features see (``styles_folded``: the caller has passed
    it through ``fold_styles`` already)."""
    if not text:
        return ""
    text = strip_surrogates(text[: max_chars * 2])
    if "&" in text or "<" in text:
        # Comments arrive as HTML: entities are letters, tags are markup (their links are counted elsewhere).
        text = html.unescape(_TAG.sub(" ", text))
        styles_folded = False  # an entity may spell any letter ("ren&#233;e")
    text = unicodedata.normalize("NFKC", text if styles_folded else fold_styles(text))[:max_chars]
    if not text.isascii():
        text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub(" ", text)
    text = text.casefold()
    if _NEEDS_FOLDING.search(text):
        text = _TOKEN.sub(lambda m: _fold_token(m.group(0)), text)
    text = _RUN.sub(_fold_run, text)
    if _SPACED_TAIL.search(text):
        text = _SPACED.sub(lambda m: _SPACED_SEP.sub("", m.group(0)), text)
    return text
