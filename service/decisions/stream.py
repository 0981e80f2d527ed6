"""Stream checks: what one comment cannot show, the stream does — campaigns, floods, first sight.

Everything lives in Redis database ``STREAM_DB`` with expiry, so losing Redis loses only recent history. A batch of
comments is checked in ONE round trip (a Lua script that checks and records each comment in turn, so the next one
sees it). Redis slow or down never raises: the results say the checks were skipped, and a circuit breaker stops
further attempts for a while, so the decision path falls back to the model at once.

Keys (all with expiry): ``b:<band>:<hash>`` → cluster key (LSH buckets); ``cl:<key>:sig`` the cluster's founding
MinHash; ``cl:<key>:m|s|p`` sorted sets of members, sources (IP+author) and posts by time; ``cl:<key>:rej`` the
category of a rejected copy; ``v:<site>:<dimension>:<value>`` sliding-window sorted sets; ``fs:<site>:<kind>:<value>``
first-sight markers.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import redis

from service import redis_bus
from service.decisions.hits import RuleHit
from service.decisions.rules import domain_of
from service.decisions.stream_signatures import HEX_WIDTH, NUM_PERM, TextSignature, link_domains, signature
from service.ips import canonical_address
from service.models import Comment, Site

log = logging.getLogger(__name__)

SOCKET_TIMEOUT = 0.1  # seconds: a batch script takes ~0.1 ms a comment; longer means Redis is in trouble
CONNECT_TIMEOUT = 0.1
BREAKER_BASE_SECONDS = 1.0  # after a failure skip the checks for 1 s, doubling per failure up to 30 s
BREAKER_MAX_SECONDS = 30.0
CAMPAIGN_RETENTION_SECONDS = 86_400  # signatures are kept a day; a site's campaign window is at most this
REJECTED_RETENTION_SECONDS = 7 * 86_400  # a rejected campaign is remembered a week
WINDOW_CAP = 10_000  # entries kept per sliding window: counts saturate, memory stays bounded in a flood
CHUNK = 16  # comments a script call: a chunk runs in ~3 ms, far inside the socket timeout
MIN_SIMILARITY = 0.4  # estimated Jaccard (of word bigrams) with a cluster's first text, to join it
SKIPPED_UNAVAILABLE = "stream checks skipped: Redis unavailable"

# Velocity dimensions (settings `<dim>_window_seconds`, `<dim>_hold_from`) and how a reason names each.
VELOCITY = {
    "ip": "from this IP",
    "ip_prefix": "from the network {value}",
    "email": "from this e-mail address",
    "author_domain": "with an author link to {value}",
    "link_domain": "linking to {value}",
    "post": "on this post",
}

_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    # Campaigns: hold a comment when `campaign_hold_from` earlier near-duplicates were posted in the window, by at
    # least `campaign_min_spread` different authors/IPs or on that many different posts (one person repeating
    # themselves on one post is velocity's business, not a campaign).
    "campaign_window_seconds": 3600,
    "campaign_hold_from": 3,
    "campaign_min_spread": 2,
    # Texts with fewer distinct word pairs are never signed: people really do repeat "great post, thanks!".
    "campaign_min_shingles": 8,
    # Reject a near-duplicate of a comment that was rejected (as spam or abuse) in the last week.
    "campaign_reject_rejected": True,
    # Velocity: hold from the `*_hold_from`-th comment in the sliding window (0 turns one dimension off).
    "ip_window_seconds": 300,
    "ip_hold_from": 10,
    "ip_prefix_window_seconds": 300,  # /24 for IPv4, /64 for IPv6
    "ip_prefix_hold_from": 30,
    "email_window_seconds": 300,
    "email_hold_from": 10,
    "author_domain_window_seconds": 600,
    "author_domain_hold_from": 10,
    "link_domain_window_seconds": 600,
    "link_domain_hold_from": 10,
    "post_window_seconds": 300,
    "post_hold_from": 40,
    # First sight: a note (and a feature) for a link domain or author e-mail not seen on the site in this many days.
    "first_sight": True,
    "first_sight_days": 90,
    # Domains many honest people link to: no velocity or first-sight for them (subdomains included).
    "shared_domains": [
        "youtube.com",
        "youtu.be",
        "google.com",
        "wikipedia.org",
        "facebook.com",
        "twitter.com",
        "x.com",
        "instagram.com",
        "linkedin.com",
        "github.com",
        "reddit.com",
        "medium.com",
        "wordpress.com",
        "blogspot.com",
        "gravatar.com",
        "imgur.com",
    ],
}
_FEATURES = (
    "dup_count",
    "dup_sources",
    "dup_posts",
    "dup_similarity",
    "campaign_rejected",
    *(f"{dim}_count" for dim in VELOCITY),
    "first_sight_link_domain",
    "first_sight_author",
)


@dataclass(frozen=True, slots=True)
class StreamResult:
    hits: list[RuleHit]
    campaign_key: str | None  # the near-duplicate cluster; shared by ≥ 2 comments it is a campaign
    features: dict[str, float]
    skipped: str | None  # None, or why the checks were skipped (shown as a reason)


def stream_defaults() -> dict[str, Any]:
    """The stream settings every site starts from; a site's ``stream_settings`` overrides any of these keys."""
    return copy.deepcopy(_DEFAULTS)


def stream_settings_for(site: Site | None) -> dict[str, Any]:
    """The site's stream settings: defaults merged with ``site.stream_settings`` (bad values fall back, logged)."""
    overrides = (site.stream_settings if site is not None else None) or {}
    return _merged(json.dumps(overrides, sort_keys=True, default=str))


@lru_cache(maxsize=256)
def _merged(overrides_json: str) -> dict[str, Any]:
    # Cached per distinct settings: the warning about an unknown or bad key is logged once, not per comment.
    merged = stream_defaults()
    for key, value in json.loads(overrides_json).items():
        if key not in _DEFAULTS:
            log.warning("unknown stream setting %r is ignored", key)
            continue
        default = _DEFAULTS[key]
        try:
            if isinstance(default, bool):
                merged[key] = value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
            elif isinstance(default, int):
                merged[key] = max(0, int(value))
            elif isinstance(default, list):
                if not isinstance(value, list):
                    raise TypeError("expected a list")
                merged[key] = [str(v).lower().strip() for v in value]
        except (TypeError, ValueError):
            log.warning("stream setting %s=%r is not valid; using the default %r", key, value, default)
    for key in merged:
        if key.endswith("_window_seconds"):
            cap = CAMPAIGN_RETENTION_SECONDS
            merged[key] = min(max(1, merged[key]), cap)
    return merged


# --- circuit breaker -------------------------------------------------------------------------------------------


class _Breaker:
    """After a Redis failure, skip the checks for a while (doubling per consecutive failure) instead of waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._failures = 0

    def allows(self) -> bool:
        return time.monotonic() >= self._open_until

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._open_until = 0, 0.0

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            pause = min(BREAKER_MAX_SECONDS, BREAKER_BASE_SECONDS * 2 ** (self._failures - 1))
            self._open_until = time.monotonic() + pause


_breaker = _Breaker()


def reset_breaker() -> None:
    """Close the circuit breaker (tests, or after Redis was repaired and you do not want to wait)."""
    _breaker.succeeded()


def _client() -> redis.Redis:
    return redis_bus.client(
        redis_bus.STREAM_DB, socket_timeout=SOCKET_TIMEOUT, connect_timeout=CONNECT_TIMEOUT, retries=0
    )


def forget_author(site_id: int, email: str) -> None:
    """Delete what the checks keep under an author's e-mail address on a site -- the first-sight marker (kept for
    ``first_sight_days``) and the flood window -- when the author asked to be forgotten (``service.personal_data``).
    Campaign clusters keep a digest of IP and address together among their sources until they expire."""
    address = _email(email)
    if address:
        digest = _h(address)
        _client().delete(f"fs:{site_id}:e:{digest}", f"v:{site_id}:email:{digest}")


def _run(script: str, arg_sets: list[list[Any]]) -> list[Any]:
    """Run the script once per argument set, all in one pipelined round trip; load it once on NOSCRIPT."""
    conn = _client()
    sha = _SHA[script]
    for attempt in (1, 2):
        pipe = conn.pipeline(transaction=False)
        for args in arg_sets:
            pipe.evalsha(sha, 0, *args)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:
            # After a Redis restart: nothing ran (every call failed the same way), so running again is safe.
            if attempt == 2:
                raise
            conn.script_load(script)
    raise AssertionError("unreachable")


# --- check -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Prepared:
    comment: Comment
    settings: dict[str, Any]
    sig: TextSignature | None
    velocity: list[tuple[str, str, str, int]]  # (dimension, shown value, key, window ms)
    first_sight: list[tuple[str, str, str]]  # (kind, shown value, key)


def _h(value: str) -> str:
    return hashlib.blake2b(value.encode(), digest_size=8).hexdigest()


def _ip_and_prefix(raw: str) -> tuple[str, str] | None:
    try:
        address = canonical_address(raw)
    except ValueError:
        return None
    bits = 24 if address.version == 4 else 64
    return str(address), str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def _email(raw: str) -> str:
    local, _, host = raw.strip().lower().partition("@")
    return f"{local.partition('+')[0]}@{host}" if host else ""


def _shared(host: str, shared: list[str], own: str) -> bool:
    return any(host == d or host.endswith("." + d) for d in [*shared, own] if d)


def _site_id(comment: Comment) -> int:
    site = comment.site
    return int(site.id if site is not None and site.id is not None else comment.site_id or 0)


def _prepare(comment: Comment) -> _Prepared:
    settings = stream_settings_for(comment.site)
    site = _site_id(comment)
    sig = signature(comment.content or "", settings["campaign_min_shingles"])
    own = domain_of(comment.site.url) if comment.site is not None and comment.site.url else ""
    shared = settings["shared_domains"]
    candidates: list[tuple[str, str, str]] = []  # (dimension, shown value, key value)
    ip = _ip_and_prefix(comment.author_ip or "")
    if ip is not None:
        candidates += [("ip", ip[0], ip[0]), ("ip_prefix", ip[1], ip[1])]
    email = _email(comment.author_email or "")
    if email:
        candidates.append(("email", email, _h(email)))
    author_domain = domain_of(comment.author_url or "")
    if author_domain and not _shared(author_domain, shared, own):
        candidates.append(("author_domain", author_domain, author_domain))
    domains = [d for d in link_domains(comment.content or "") if not _shared(d, shared, own)][:5]
    candidates += [("link_domain", d, d) for d in domains]
    if comment.post_url:
        candidates.append(("post", comment.post_url, _h(comment.post_url.strip())))
    velocity = [
        (dim, shown, f"v:{site}:{dim}:{value}", settings[f"{dim}_window_seconds"] * 1000)
        for dim, shown, value in candidates
        if settings[f"{dim}_hold_from"] > 0
    ]
    first_sight: list[tuple[str, str, str]] = []
    if settings["first_sight"]:
        first_sight = [("link_domain", d, f"fs:{site}:d:{d}") for d in domains]
        if email:
            first_sight.append(("author", email, f"fs:{site}:e:{_h(email)}"))
    return _Prepared(comment, settings, sig, velocity, first_sight)


def _source(comment: Comment) -> str:
    who = _email(comment.author_email or "") or (comment.author_name or "").strip().lower()
    return _h(f"{(comment.author_ip or '').strip()}|{who}")


def _window_words(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} seconds"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _skipped(comments: Sequence[Comment], reason: str) -> list[StreamResult]:
    return [StreamResult([], None, {}, reason) for _ in comments]


def check_stream(comments: Sequence[Comment], now: datetime | None = None) -> list[StreamResult]:
    """Campaign, velocity and first-sight checks of a batch, in order, in one Redis round trip.

    Each comment is recorded as it is checked, so the next one (in this batch or any later one) sees it. Never
    raises on Redis errors: the results then carry ``skipped`` and no hits. ``now`` (default: the wall clock) is
    the time of every window, so tests can simulate time.
    """
    if not comments:
        return []
    if not _breaker.allows():
        return _skipped(comments, SKIPPED_UNAVAILABLE)
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    prepared = [_prepare(c) for c in comments]
    items: list[dict[str, Any]] = []
    for p in prepared:
        if not p.settings["enabled"]:
            items.append({"sig": "", "bands": [], "vel": [], "fs": []})
            continue
        items.append(
            {
                "uid": str(p.comment.id) if p.comment.id is not None else uuid.uuid4().hex[:16],
                "sig": p.sig.minhash if p.sig else "",
                "bands": list(p.sig.bands) if p.sig else [],
                "ckey": p.sig.key if p.sig else "",
                "src": _source(p.comment),
                "post": _h((p.comment.post_url or "").strip()),
                "cw": p.settings["campaign_window_seconds"] * 1000,
                "vel": [[key, window] for _dim, _shown, key, window in p.velocity],
                "fs": [[key, p.settings["first_sight_days"] * 86_400_000] for _k, _s, key in p.first_sight],
            }
        )
    # Chunks of a few comments, pipelined: one round trip, yet each reply comes well within the socket timeout.
    fixed = [now_ms, CAMPAIGN_RETENTION_SECONDS * 1000, _min_same(), WINDOW_CAP]
    chunks = [[*fixed, json.dumps(items[i : i + CHUNK])] for i in range(0, len(items), CHUNK)]
    try:
        replies = [reply for chunk in _run(_CHECK_LUA, chunks) for reply in chunk]
    except (redis.RedisError, OSError) as exc:
        if _breaker.allows():
            log.warning("stream checks skipped, Redis failed: %s", exc)
        _breaker.failed()
        return _skipped(comments, SKIPPED_UNAVAILABLE)
    _breaker.succeeded()
    return [_result(p, reply) for p, reply in zip(prepared, replies, strict=True)]


def _min_same() -> int:
    return int(MIN_SIMILARITY * NUM_PERM + 0.5)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _result(p: _Prepared, reply: list[Any]) -> StreamResult:
    s = p.settings
    if not s["enabled"]:
        return StreamResult([], None, {}, None)
    key, copies, sources, posts, rejected, same, counts, new_flags = reply
    key = _text(key)
    rejected = _text(rejected)
    copies, sources, posts = int(copies), int(sources), int(posts)
    hits: list[RuleHit] = []
    features = dict.fromkeys(_FEATURES, 0.0)
    if key:
        features.update(
            dup_count=float(copies),
            dup_sources=float(sources),
            dup_posts=float(posts),
            dup_similarity=int(same) / NUM_PERM,
            campaign_rejected=1.0 if rejected else 0.0,
        )
        if rejected and s["campaign_reject_rejected"]:
            hits.append(
                RuleHit("campaign.rejected", "reject", f"near-duplicate of a comment rejected as {rejected}", rejected)
            )
        spread = max(sources, posts)
        if s["campaign_hold_from"] > 0 and copies >= s["campaign_hold_from"] and spread >= s["campaign_min_spread"]:
            window = _window_words(s["campaign_window_seconds"])
            hits.append(RuleHit("campaign", "hold", f"same text as {copies} comments in the last {window}", "spam"))
    for (dim, shown, _key, window_ms), count in zip(p.velocity, counts, strict=True):
        count = int(count)
        name = f"{dim}_count"
        features[name] = max(features[name], float(count))
        if count >= s[f"{dim}_hold_from"]:
            what = VELOCITY[dim].format(value=shown)
            window = _window_words(window_ms // 1000)
            hits.append(RuleHit(f"velocity.{dim}", "hold", f"{_ordinal(count)} comment {what} in {window}", "spam"))
    for (kind, shown, _key), new in zip(p.first_sight, new_flags, strict=True):
        if not int(new):
            continue
        features[f"first_sight_{kind}"] += 1.0
        if kind == "link_domain":
            hits.append(RuleHit("first_sight.link_domain", "note", f"first link to {shown} on this site"))
        else:
            hits.append(RuleHit("first_sight.author", "note", "first comment from this e-mail address on this site"))
    return StreamResult(hits, key or None, features, None)


# --- record decisions ------------------------------------------------------------------------------------------


# Who a human decision is recorded as (``comments.decided_by``): a signed-in user (``user:<id>``, what the
# moderation UI writes; ``moderator:<id>`` from earlier versions), the blog's feedback API or Akismet submit-ham.
_HUMAN_PREFIXES = ("user:", "moderator")
_HUMAN_ACTORS = ("blog", "akismet")


def _human(comment: Comment) -> bool:
    decided_by = comment.decided_by or ""
    return decided_by.startswith(_HUMAN_PREFIXES) or decided_by in _HUMAN_ACTORS


def record_decisions(comments: Sequence[Comment], cleared: Sequence[Comment] = ()) -> None:
    """Remember which campaigns had a copy rejected (spam or abuse), so later near-duplicates are rejected too.

    Call after the decisions are committed, automatic or human. A human approval of a copy clears the mark (a
    moderator said this text is fine), and so does each comment in ``cleared`` (a moderator's rejection that was
    undone: a slip must not go on rejecting the campaign's later copies). Uses ``campaign_key`` when set, else
    finds the cluster from the text. Never raises on Redis errors.
    """
    items: list[dict[str, Any]] = []
    for c, undone in [(c, False) for c in comments] + [(c, True) for c in cleared]:
        if undone:
            action = "clear"
        elif c.decision == "reject" and c.category in ("spam", "abuse"):
            action = "reject"
        elif c.decision == "approve" and _human(c):
            action = "clear"
        else:
            continue
        sig = signature(c.content or "", stream_settings_for(c.site)["campaign_min_shingles"])
        if not c.campaign_key and sig is None:
            continue
        items.append(
            {
                "action": action,
                "cat": c.category or "spam",
                "ckey": c.campaign_key or "",
                "sig": sig.minhash if sig else "",
                "bands": list(sig.bands) if sig else [],
                "founder": sig.key if sig else "",
            }
        )
    if not items or not _breaker.allows():
        if items:
            log.warning("campaign decisions not recorded (%d): Redis unavailable", len(items))
        return
    try:
        fixed = [REJECTED_RETENTION_SECONDS * 1000, _min_same()]
        _run(_RECORD_LUA, [[*fixed, json.dumps(items[i : i + CHUNK])] for i in range(0, len(items), CHUNK)])
    except (redis.RedisError, OSError) as exc:
        log.warning("campaign decisions not recorded (%d): %s", len(items), exc)
        _breaker.failed()
        return
    _breaker.succeeded()


# --- Lua -------------------------------------------------------------------------------------------------------
# Keys are built inside the scripts: fine on a single Redis (this project's setup), not for Redis Cluster.

_LUA_COMMON = f"""
local W = {HEX_WIDTH}
-- PEXPIRE ... GT needs Redis 7; the embedded server is Redis 6.2, so extend a TTL by hand
local function extend_ttl(k, ms)
  local ttl = redis.call('PTTL', k)
  if ttl >= 0 and ttl < ms then redis.call('PEXPIRE', k, ms) end
end
local function same_positions(a, b)
  local n = 0
  for p = 1, #a, W do
    if string.sub(a, p, p + W - 1) == string.sub(b, p, p + W - 1) then n = n + 1 end
  end
  return n
end
-- the cluster whose founding signature is most similar, among those sharing a band; or false
local function find_cluster(c, min_same)
  local best, best_same, seen = false, -1, {{}}
  for b = 1, #c.bands do
    local cl = redis.call('GET', 'b:' .. b .. ':' .. c.bands[b])
    if cl and not seen[cl] then
      seen[cl] = true
      local rep = redis.call('GET', 'cl:' .. cl .. ':sig')
      if rep then
        local n = same_positions(rep, c.sig)
        if n > best_same then best, best_same = cl, n end
      end
    end
  end
  if best and best_same >= min_same then return best, best_same end
  return false, 0
end
"""

_CHECK_LUA = (
    _LUA_COMMON
    + """
local now = tonumber(ARGV[1])
local retain = tonumber(ARGV[2])
local min_same = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local items = cjson.decode(ARGV[5])

local function add_counted(key, member, window)
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local n = redis.call('ZCARD', key)
  if n > cap then
    redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)
    n = cap
  end
  redis.call('PEXPIRE', key, window)
  return n
end

local out = {}
for i, c in ipairs(items) do
  local key, copies, sources, posts, rejected, same = '', 0, 0, 0, '', 0
  if c.sig ~= '' then
    local found, n = find_cluster(c, min_same)
    if found then
      key, same = found, n
    else
      key = c.ckey
      redis.call('SET', 'cl:' .. key .. ':sig', c.sig, 'NX', 'PX', retain)
    end
    extend_ttl('cl:' .. key .. ':sig', retain)
    for b = 1, #c.bands do
      redis.call('SET', 'b:' .. b .. ':' .. c.bands[b], key, 'NX', 'PX', retain)
    end
    local since = '(' .. string.format('%.0f', now - c.cw)
    local m, s, p = 'cl:' .. key .. ':m', 'cl:' .. key .. ':s', 'cl:' .. key .. ':p'
    add_counted(m, c.uid, retain)
    add_counted(s, c.src, retain)
    add_counted(p, c.post, retain)
    copies = redis.call('ZCOUNT', m, since, '+inf') - 1
    sources = redis.call('ZCOUNT', s, since, '+inf')
    posts = redis.call('ZCOUNT', p, since, '+inf')
    rejected = redis.call('GET', 'cl:' .. key .. ':rej') or ''
  end
  local counts = {}
  for j, v in ipairs(c.vel) do
    counts[j] = add_counted(v[1], c.uid, v[2])
  end
  local fresh = {}
  for j, f in ipairs(c.fs) do
    local first = redis.call('GET', f[1])
    if not first then
      redis.call('SET', f[1], c.uid, 'PX', f[2])
      fresh[j] = 1
    else
      redis.call('PEXPIRE', f[1], f[2])
      -- a redelivered comment is still the first sight it was
      if first == c.uid then fresh[j] = 1 else fresh[j] = 0 end
    end
  end
  out[i] = {key, copies, sources, posts, rejected, same, counts, fresh}
end
return out
"""
)

_RECORD_LUA = (
    _LUA_COMMON
    + """
local keep = tonumber(ARGV[1])
local min_same = tonumber(ARGV[2])
local items = cjson.decode(ARGV[3])
for _, c in ipairs(items) do
  local key = c.ckey
  if key == '' then
    key = find_cluster(c, min_same) or c.founder
  end
  if c.action == 'reject' then
    redis.call('SET', 'cl:' .. key .. ':rej', c.cat, 'PX', keep)
    if c.sig ~= '' then
      redis.call('SET', 'cl:' .. key .. ':sig', c.sig, 'NX', 'PX', keep)
      -- keep this copy's buckets as long as the mark, so a copy next week still finds the cluster
      for b = 1, #c.bands do
        local bk = 'b:' .. b .. ':' .. c.bands[b]
        if not redis.call('SET', bk, key, 'NX', 'PX', keep) and redis.call('GET', bk) == key then
          extend_ttl(bk, keep)
        end
      end
    end
    extend_ttl('cl:' .. key .. ':sig', keep)
  else
    redis.call('DEL', 'cl:' .. key .. ':rej')
  end
end
return #items
"""
)

_SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_CHECK_LUA, _RECORD_LUA)}
