"""Misspelt copies of training comments, so a typo or a dodge ("idoit", "stupd", "retrad") does not hide abuse.

The normaliser folds the systematic obfuscations (leetspeak, homoglyphs, s p a c e d letters, long runs); what is
left is the ordinary misspelling, which a model that only saw correct spellings reads as an unknown word. A copy of
a training comment with some of its words misspelt (two letters swapped, one dropped, doubled or replaced by a
vowel) teaches the character n-grams to carry across it. Deterministic: the same text always gets the same copy.
"""

from __future__ import annotations

import random
import re
import zlib

# Words of four or more letters: shorter ones misspelt are mostly other words ("tha", "yuo" aside).
_WORD = re.compile(r"[^\W\d_]{4,}")
_VOWELS = "aeiou"
DEFAULT_RATE = 0.3  # share of the eligible words misspelt in a copy


def misspelt(text: str, rate: float = DEFAULT_RATE) -> str:
    """``text`` with about ``rate`` of its words of four or more letters misspelt once each."""
    rng = random.Random(zlib.crc32(text.encode("utf-8", "surrogatepass")))

    def one(m: re.Match[str]) -> str:
        word = m.group(0)
        if rng.random() >= rate:
            return word
        i = rng.randrange(1, len(word) - 1)  # the first and last letters stay: that is how typos look
        edit = rng.randrange(4)
        if edit == 0:
            i = min(i, len(word) - 3)
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if edit == 1:
            return word[:i] + word[i + 1 :]
        if edit == 2:
            return word[:i] + word[i] + word[i:]
        return word[:i] + rng.choice(_VOWELS) + word[i + 1 :]

    return _WORD.sub(one, text)
