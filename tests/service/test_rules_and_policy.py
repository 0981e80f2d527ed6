"""Rules before the model and the policy that turns hits and scores into a decision."""

from __future__ import annotations

import pytest

from service.admin.views import list_value
from service.decisions.hits import RuleHit
from service.decisions.policy import KindThresholds, ModelVerdict, decide
from service.decisions.rules import ListMatcher, RuleInput, count_links, run_rules
from service.ips import ZoneIdError, canonical_ip, canonical_network

T = KindThresholds(approve_below=0.3, reject_at=0.9)


def _input(**kw: str) -> RuleInput:
    base = {
        "content": "hello",
        "author_name": "",
        "author_email": "",
        "author_url": "",
        "author_ip": "",
        "honeypot": "",
    }
    return RuleInput(**{**base, **kw})


def _v(kind: str, p: float) -> ModelVerdict:
    return ModelVerdict(kind, p, [f"{kind} feature"], T, f"{kind}-v1")


@pytest.mark.parametrize(
    ("entry", "comment", "hit"),
    [
        (ListMatcher("block", "email", "bad@x.com"), _input(author_email="BAD@x.com"), True),
        (ListMatcher("block", "email", "@spam.biz"), _input(author_email="a@spam.biz"), True),
        (ListMatcher("block", "email", "bad@x.com"), _input(author_email="good@x.com"), False),
        (ListMatcher("block", "ip", "10.1.0.0/16"), _input(author_ip="10.1.200.3"), True),
        (ListMatcher("block", "ip", "10.1.0.0/16"), _input(author_ip="10.2.0.1"), False),
        (ListMatcher("block", "ip", "2001:db8::/32"), _input(author_ip="2001:db8::5"), True),
        (ListMatcher("block", "ip", "1.2.3.4"), _input(author_ip="not an ip"), False),
        (ListMatcher("block", "domain", "pills.xyz"), _input(author_url="https://www.shop.pills.xyz/a"), True),
        (ListMatcher("block", "domain", "pills.xyz"), _input(author_url="https://notpills.xyz"), False),
        (ListMatcher("block", "domain", "pills.xyz"), _input(content="buy at https://shop.pills.xyz/now."), True),
        (ListMatcher("block", "domain", "pills.xyz"), _input(content="see www.pills.xyz today"), True),
        (ListMatcher("block", "domain", "pills.xyz"), _input(content="see https://notpills.xyz/a"), False),
        (ListMatcher("block", "author", "Cheap Flights"), _input(author_name=" cheap flights "), True),
        (ListMatcher("block", "phrase", "casino bonus"), _input(content="Best CASINO BONUS here"), True),
    ],
)
def test_list_entries_match(entry: ListMatcher, comment: RuleInput, hit: bool) -> None:
    hits = run_rules(comment, [entry], max_links=2, trusted_author=False, leniency=0)
    assert bool([h for h in hits if h.code.startswith("blocklist")]) is hit


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:102:304", "1.2.3.4"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::1", "::1"),
        ("64:ff9b::1.2.3.4", "64:ff9b::102:304"),  # NAT64, not mapped: another address
    ],
)
def test_canonical_ip(raw: str, canonical: str) -> None:
    assert canonical_ip(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("10.1.2.3/16", "10.1.0.0/16"),
        ("1.2.3.4", "1.2.3.4/32"),
        ("::ffff:1.2.3.4", "1.2.3.4/32"),
        ("::ffff:1.2.3.0/120", "1.2.3.0/24"),
        ("::FFFF:0:0/96", "0.0.0.0/0"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("::/0", "::/0"),  # wider than the mapped range: stays IPv6
    ],
)
def test_canonical_network(raw: str, canonical: str) -> None:
    assert str(canonical_network(raw)) == canonical


@pytest.mark.parametrize("raw", ["fe80::1%eth0", "fe80::%eth0/64", "::ffff:1.2.3.4%1", "999.1.1.1", "", "1.2.3.4/33"])
def test_what_is_no_canonical_address_or_network(raw: str) -> None:
    with pytest.raises(ValueError):
        canonical_network(raw)
    if "/" not in raw:
        with pytest.raises(ZoneIdError if "%" in raw else ValueError):
            canonical_ip(raw)


@pytest.mark.parametrize(
    ("entry", "ip", "hit"),
    [
        # A dual-stack server shows an IPv4 client as ::ffff:a.b.c.d; rules written either way match it.
        ("1.2.3.4", "::ffff:1.2.3.4", True),
        ("10.1.0.0/16", "::ffff:10.1.200.3", True),
        ("::ffff:1.2.3.4", "1.2.3.4", True),
        ("::ffff:10.1.0.0/112", "10.1.200.3", True),
        ("::ffff:10.1.0.0/112", "::ffff:10.1.200.3", True),
        ("10.1.0.0/16", "::ffff:10.2.0.1", False),
        ("2001:db8::/32", "2001:DB8:0:0::5", True),
        ("2001:db8::1", "2001:0db8::0001", True),
        ("::/0", "1.2.3.4", False),
        ("fe80::/10", "fe80::1%eth0", False),  # an address with a zone ID is no client's: no IP rule applies
    ],
)
def test_ip_entries_match_canonical_addresses(entry: str, ip: str, hit: bool) -> None:
    for action in ("block", "allow"):
        assert ListMatcher(action, "ip", entry).matches(_input(author_ip=ip)) is hit


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:203.0.113.0/120", "203.0.113.0/24"),
        ("203.0.113.9/24", "203.0.113.0/24"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_ip_list_entries_are_stored_canonical(raw: str, stored: str) -> None:
    assert list_value("ip", raw) == stored


def test_an_ip_list_entry_with_a_zone_id_is_refused() -> None:
    with pytest.raises(ValueError, match="zone ID"):
        list_value("ip", "fe80::1%eth0")


def test_an_allowed_domain_vouches_for_the_author_not_for_links_in_the_text() -> None:
    entry = ListMatcher("allow", "domain", "wikipedia.org")
    assert entry.matches(_input(author_url="https://en.wikipedia.org/wiki/User:A"))
    assert not entry.matches(_input(content="cheap pills http://pills.xyz, see https://en.wikipedia.org/wiki/Pill"))


def test_an_allow_entry_beats_a_block_entry() -> None:
    entries = [ListMatcher("block", "phrase", "casino"), ListMatcher("allow", "email", "editor@blog.example")]
    hits = run_rules(
        _input(content="casino review", author_email="editor@blog.example"),
        entries,
        max_links=2,
        trusted_author=False,
        leniency=0,
    )
    assert [h.effect for h in hits] == ["approve"]
    assert decide(hits, [_v("spam", 0.99)]).decision == "approve"


def test_honeypot_rejects_and_links_hold() -> None:
    hits = run_rules(_input(honeypot="filled"), [], max_links=2, trusted_author=False, leniency=0)
    out = decide(hits, [_v("spam", 0.01)])
    assert (out.decision, out.category) == ("reject", "spam")
    assert any("honeypot" in r for r in out.reasons)
    three = _input(content="see http://a.example http://b.example and www.c.example")
    assert count_links(three.content) == 3
    hits = run_rules(three, [], max_links=2, trusted_author=False, leniency=0)
    out = decide(hits, [_v("spam", 0.01)])
    assert out.decision == "hold"
    assert "3 links (the site allows 2)" in out.reasons


def test_hold_rule_does_not_soften_a_model_reject() -> None:
    assert decide([RuleHit("links", "hold", "3 links", "spam")], [_v("spam", 0.95)]).decision == "reject"


@pytest.mark.parametrize(
    ("spam", "abuse", "decision", "category"),
    [
        (0.1, 0.1, "approve", None),
        (0.5, 0.1, "hold", "spam"),
        (0.95, 0.1, "reject", "spam"),
        (0.1, 0.95, "reject", "abuse"),
        (0.5, 0.95, "reject", "abuse"),
        (0.1, 0.5, "hold", "abuse"),
    ],
)
def test_thresholds(spam: float, abuse: float, decision: str, category: str | None) -> None:
    out = decide([], [_v("spam", spam), _v("abuse", abuse)])
    assert (out.decision, out.category) == (decision, category)
    assert out.reasons


def test_a_trusted_author_gets_a_more_lenient_bar() -> None:
    hits = run_rules(_input(), [], max_links=2, trusted_author=True, leniency=0.15)
    assert decide([], [_v("spam", 0.92)]).decision == "reject"
    assert decide(hits, [_v("spam", 0.92)], leniency=0.15).decision == "hold"
    assert decide(hits, [_v("spam", 0.4)], leniency=0.15).decision == "approve"


def test_akismet_test_hooks() -> None:
    spam = run_rules(_input(author_name="viagra-test-123"), [], max_links=2, trusted_author=False, leniency=0)
    assert decide(spam, [_v("spam", 0.0)]).decision == "reject"
    admin = RuleInput("buy pills", "", "", "", "", "", user_role="administrator")
    assert decide(run_rules(admin, [], max_links=2, trusted_author=False, leniency=0), [_v("spam", 1.0)]).decision == (
        "approve"
    )
