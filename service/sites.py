"""Sites and their keys: creation, rotation and lookup by key."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.models import CallbackDelivery, Site
from service.security import hash_key, new_akismet_key, new_api_key, new_callback_secret


@dataclass(frozen=True)
class SiteKeys:
    """Keys are shown once, at creation or rotation; only their hashes are stored."""

    api_key: str
    akismet_key: str


# The reason a callback delivery of a deactivated site was given up unsent (service.callbacks gives up on one it
# finds so at its attempt, too).
SITE_DEACTIVATED = "site deactivated"

MAX_NAME_CHARS = 200  # sites.name
MAX_URL_CHARS = 2000  # sites.url, sites.callback_url
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def http_url(raw: str | None, name: str, required: bool = False) -> str | None:
    """A site's or callback's URL: absolute http(s) with a host (and a valid port), or ValueError naming ``name``.

    Empty means none (None) unless ``required``. What is refused could never be reached: ``http://``, a host
    with a space in it, ``http://:80/``, a port past 65535.
    """
    value = (raw or "").strip()
    if not value:
        if required:
            raise ValueError(f"{name} is required")
        return None
    problem = f"{name} must be an http(s) URL with a host (at most {MAX_URL_CHARS} characters), e.g. https://blog.example/path"
    if len(value) > MAX_URL_CHARS or _SPACE_OR_CONTROL.search(value):
        raise ValueError(problem)
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError when it is not a number in 0..65535
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    return value


def check_site_fields(name: str, url: str, callback_url: str | None) -> tuple[str, str, str | None]:
    """The cleaned name, URL and callback URL of a site, or a ``ValueError`` saying which one is wrong."""
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a name (up to {MAX_NAME_CHARS} characters) is required")
    return name, http_url(url, "the site URL", required=True) or "", http_url(callback_url, "the callback URL")


def create_site(session: Session, name: str, url: str, callback_url: str | None = None) -> tuple[Site, SiteKeys]:
    """Create a site with new keys; the name and URLs are checked as the admin console checks them."""
    name, url, callback_url = check_site_fields(name, url, callback_url)
    keys = SiteKeys(new_api_key(), new_akismet_key())
    site = Site(
        name=name,
        url=url,
        api_key_hash=hash_key(keys.api_key),
        akismet_key_hash=hash_key(keys.akismet_key),
        callback_url=callback_url or None,
        callback_secret=new_callback_secret(),
        stream_settings={},
    )
    session.add(site)
    session.flush()
    return site, keys


def set_active(session: Session, site: Site, active: bool) -> int:
    """Activate or deactivate a site; returns how many pending callback deliveries deactivating it ended.

    An inactive site's keys stop working (within ``SITE_CACHE_SECONDS`` in every process) and it gets no callbacks:
    it may have been retired or changed hands, so it must not receive comment data. Its pending deliveries (queued
    or waiting for a retry) end here, given up with the reason "site deactivated", in the same transaction; no new
    ones are written for its decisions. Reactivating the site does not send those again: decisions made after it
    are delivered as usual, and the blog can read any comment's current state from the API.
    """
    site.active = active
    session.flush()
    _site_ids.clear()
    if active:
        return 0
    ended = session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.site_id == site.id, CallbackDelivery.status == "pending")
        .values(status="failed", last_error=SITE_DEACTIVATED)
    )
    return int(ended.rowcount)  # type: ignore[attr-defined]  # CursorResult has rowcount


class KeysChanged(Exception):
    """The site's keys were rotated by someone else since they were read (or shown): nothing was changed."""

    def __init__(self) -> None:
        super().__init__("the keys were rotated by someone else meanwhile; reload")


def keys_version(site: Site) -> str:
    """A short fingerprint of the site's current keys, which a rotation form carries (``rotate_keys(replacing=)``).

    Derived from the stored hashes, so the page shows nothing that could help find a key.
    """
    return hash_key(f"keys-version:{site.api_key_hash}:{site.akismet_key_hash}")[:16]


def rotate_keys(session: Session, site: Site, replacing: str | None = None) -> SiteKeys:
    """New API and Akismet keys for ``site``, replacing the keys it was read with (and, with ``replacing``, only if
    those are the keys whose ``keys_version`` the admin's page showed); KeysChanged otherwise.

    The write is conditional (``UPDATE ... WHERE api_key_hash = <the hash read>``): of two admins rotating at once,
    one wins and the other is told, instead of the later write replacing keys the first admin was just shown, so
    nobody is shown keys that are not the stored ones.
    """
    api_key_hash, akismet_key_hash = site.api_key_hash, site.akismet_key_hash
    if replacing is not None and replacing != keys_version(site):
        raise KeysChanged
    keys = SiteKeys(new_api_key(), new_akismet_key())
    rotated = session.execute(
        update(Site)
        .where(Site.id == site.id, Site.api_key_hash == api_key_hash, Site.akismet_key_hash == akismet_key_hash)
        .values(api_key_hash=hash_key(keys.api_key), akismet_key_hash=hash_key(keys.akismet_key))
        .execution_options(synchronize_session=False)
    )
    if rotated.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult has rowcount
        raise KeysChanged
    session.expire(site, ["api_key_hash", "akismet_key_hash"])
    _site_ids.clear()
    return keys


# Keys are looked up on every API request (and by the rate limiter); a short cache saves a query. A rotated or
# disabled key keeps working in a process for at most this long.
SITE_CACHE_SECONDS = 10.0
_site_ids: dict[tuple[str, str], tuple[float, int | None]] = {}


def _cached_site_id(session: Session, kind: str, key: str) -> int | None:
    digest = hash_key(key)
    now = time.monotonic()
    hit = _site_ids.get((kind, digest))
    if hit is not None and now - hit[0] < SITE_CACHE_SECONDS:
        return hit[1]
    column = Site.api_key_hash if kind == "api" else Site.akismet_key_hash
    site_id = session.scalar(select(Site.id).where(column == digest, Site.active.is_(True)))
    if len(_site_ids) > 10_000:  # bound the memory a key-guessing client can make us spend
        _site_ids.clear()
    _site_ids[(kind, digest)] = (now, site_id)
    return site_id


def site_id_by_api_key(session: Session, key: str) -> int | None:
    """The active site's id for an API key, cached briefly per process."""
    return _cached_site_id(session, "api", key)


def site_id_by_akismet_key(session: Session, key: str) -> int | None:
    """The active site's id for an Akismet key, cached briefly per process."""
    return _cached_site_id(session, "akismet", key)


def site_by_api_key(session: Session, key: str) -> Site | None:
    return session.scalars(select(Site).where(Site.api_key_hash == hash_key(key), Site.active.is_(True))).first()


def site_by_akismet_key(session: Session, key: str) -> Site | None:
    return session.scalars(select(Site).where(Site.akismet_key_hash == hash_key(key), Site.active.is_(True))).first()
