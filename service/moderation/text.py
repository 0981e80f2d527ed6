"""Showing hostile text safely: Jinja filters for comment fields.

Autoescaping does the escaping; these filters only split and mark up plain strings (they never return Markup), so
nothing here can turn user data into HTML.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint

# Embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069) can reorder the text around them, e.g. make
# "exe.txt" read as "txt.exe". They are shown as visible markers instead; plain marks (LRM/RLM) are harmless.
_BIDI_CONTROLS = {
    "\u202a": "LRE",
    "\u202b": "RLE",
    "\u202c": "PDF",
    "\u202d": "LRO",
    "\u202e": "RLO",
    "\u2066": "LRI",
    "\u2067": "RLI",
    "\u2068": "FSI",
    "\u2069": "PDI",
}
_BIDI_RE = re.compile("[" + "".join(_BIDI_CONTROLS) + "]")
_URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']+|\b(?:javascript|data|vbscript):[^\s<>\"']*")


def neutralise_bidi(value: str | None) -> str:
    """Replace bidi control characters with a visible marker such as ``[RLO]``."""
    return _BIDI_RE.sub(lambda m: f"[{_BIDI_CONTROLS[m.group(0)]}]", value or "")


def text_parts(value: str | None) -> list[tuple[bool, str]]:
    """Split text into (is_link, segment) so links can be shown — as text with their real target — distinctly."""
    text = neutralise_bidi(value)
    parts: list[tuple[bool, str]] = []
    pos = 0
    for match in _URL_RE.finditer(text):
        if match.start() > pos:
            parts.append((False, text[pos : match.start()]))
        parts.append((True, match.group(0)))
        pos = match.end()
    if pos < len(text):
        parts.append((False, text[pos:]))
    return parts


def http_url(value: str | None) -> str | None:
    """The URL when it is http(s) and safe to put in an href; None for javascript:, data: and anything else."""
    value = (value or "").strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and parts.netloc and not any(ch in value for ch in "\r\n\t"):
        return value
    return None


def host_of(value: str | None) -> str:
    try:
        return urlsplit((value or "").strip()).hostname or ""
    except ValueError:
        return ""


def score_classes(score: float | None) -> str:
    """CSS classes for a score bar: width in steps of 5 % and a level (no inline styles: the CSP forbids them)."""
    if score is None:
        return "w-0 level-none"
    value = min(1.0, max(0.0, score))
    level = "high" if value >= 0.8 else "mid" if value >= 0.4 else "low"
    return f"w-{int(round(value * 20)) * 5} level-{level}"


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat()


def register(bp: Blueprint) -> None:
    """Make the filters available to every template of the app."""
    filters: dict[str, Callable[..., Any]] = {
        "bidi": neutralise_bidi,
        "text_parts": text_parts,
        "http_url": http_url,
        "host_of": host_of,
        "score_classes": score_classes,
        "when": when,
        "iso": iso,
    }
    for name, fn in filters.items():
        bp.add_app_template_filter(fn, name)
