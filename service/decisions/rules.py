"""Rules that run before the model: allow/block lists, honeypot, link limit, trusted author, test hooks.

Each rule returns hits with a reason; an allow entry beats a block entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from service.decisions.hits import RuleHit
from service.ips import Address, canonical_address, canonical_network

LIST_KINDS = ("email", "ip", "domain", "author", "phrase")
_URL_IN_TEXT_RE = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']+")
_LINK_RE = re.compile(_URL_IN_TEXT_RE.pattern + r"|<a\s[^>]*href")  # an address, or an anchor without one
# Akismet's documented test hooks, honoured on every API so integrations can be tested end to end.
TEST_SPAM_AUTHORS = ("viagra-test-123", "akismet-guaranteed-spam")
TEST_SPAM_EMAIL = "akismet-guaranteed-spam@example.com"


@dataclass(frozen=True, slots=True)
class ListMatcher:
    """One allow- or blocklist entry, compiled for fast matching."""

    action: str  # allow | block
    kind: str
    value: str

    def matches(self, c: RuleInput) -> bool:
        value = self.value.strip().lower()
        if not value:
            return False
        if self.kind == "email":
            email = c.author_email.strip().lower()
            return email == value or (value.startswith("@") and email.endswith(value))
        if self.kind == "author":
            return c.author_name.strip().lower() == value
        if self.kind == "domain":
            hosts = [domain_of(c.author_url), c.author_email.rpartition("@")[2].lower()]
            if self.action == "block":
                # A blocked domain is blocked wherever it shows, links in the text included. An allowed one only
                # vouches for the author (URL, e-mail): else any spam with a link to an allowed domain would pass.
                hosts.extend(c.link_hosts)
            return any(h and (h == value or h.endswith("." + value)) for h in hosts)
        if self.kind == "ip":
            return c.ip_address is not None and _in_network(c.ip_address, value)
        if self.kind == "phrase":
            return value in c.content.lower()
        return False

    def describe(self) -> str:
        what = {
            "email": "author e-mail",
            "author": "author name",
            "domain": "author or link domain" if self.action == "block" else "author domain",
            "ip": "author IP",
        }
        if self.kind == "phrase":
            return f"text contains the {self.action}ed phrase '{self.value}'"
        return f"{what.get(self.kind, self.kind)} matches the {self.action}list entry '{self.value}'"


@dataclass(frozen=True)  # no slots: ``link_hosts`` is cached in the instance's __dict__
class RuleInput:
    """The fields the rules read; built from a stored comment."""

    content: str
    author_name: str
    author_email: str
    author_url: str
    author_ip: str
    honeypot: str
    user_role: str = ""

    @cached_property
    def ip_address(self) -> Address | None:
        """The author's address, canonical (an IPv4-mapped one as IPv4, so it meets IPv4 entries); None when there
        is none, or it has a zone ID: no IP entry applies then."""
        try:
            return canonical_address(self.author_ip)
        except ValueError:
            return None

    @cached_property
    def link_hosts(self) -> tuple[str, ...]:
        """The hosts of the links in the text (computed once, for however many domain entries)."""
        hosts = (domain_of(m.group(0).rstrip(".,;:!?)")) for m in _URL_IN_TEXT_RE.finditer(self.content))
        return tuple(dict.fromkeys(h for h in hosts if h))


def domain_of(url: str) -> str:
    if not url:
        return ""
    try:
        host = urlsplit(url if "//" in url else "//" + url).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def _in_network(address: Address, entry: str) -> bool:
    """The address is the entry or in its network (canonical: an IPv4-mapped entry is an IPv4 one)."""
    try:
        return address in canonical_network(entry)
    except ValueError:  # an entry that is no address or network (a zone ID, or stored before validation)
        return False


def count_links(text: str) -> int:
    return len(_LINK_RE.findall(text))


def list_hits(c: RuleInput, entries: Iterable[ListMatcher]) -> list[RuleHit]:
    """Allow entries beat block entries: when any allow entry matches, block entries are not reported."""
    matched = [e for e in entries if e.matches(c)]
    allows = [e for e in matched if e.action == "allow"]
    if allows:
        return [RuleHit(f"allowlist.{e.kind}", "approve", e.describe()) for e in allows]
    return [RuleHit(f"blocklist.{e.kind}", "reject", e.describe(), "spam") for e in matched]


def run_rules(
    c: RuleInput,
    entries: Sequence[ListMatcher],
    *,
    max_links: int,
    trusted_author: bool,
    leniency: float,
) -> list[RuleHit]:
    """All rule hits for one comment, in the order they are shown."""
    hits = list_hits(c, entries)
    if c.author_name.strip().lower() in TEST_SPAM_AUTHORS or c.author_email.strip().lower() == TEST_SPAM_EMAIL:
        hits.append(RuleHit("test.spam", "reject", "Akismet test hook: guaranteed spam author", "spam"))
    if c.user_role.strip().lower() == "administrator":
        hits.append(RuleHit("test.administrator", "approve", "written by a site administrator"))
    if c.honeypot.strip():
        hits.append(RuleHit("honeypot", "reject", "the hidden honeypot field was filled in (a bot)", "spam"))
    links = count_links(c.content)
    if links > max_links:
        hits.append(RuleHit("links", "hold", f"{links} links (the site allows {max_links})", "spam"))
    if trusted_author and leniency > 0:
        hits.append(RuleHit("trusted_author", "lenient", "the author has an approved comment on this site"))
    return hits
