"""Sites and their keys: creation, rotation and lookup by key."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Site
from service.security import hash_key, new_akismet_key, new_api_key, new_callback_secret


@dataclass(frozen=True)
class SiteKeys:
    """Keys are shown once, at creation or rotation; only their hashes are stored."""

    api_key: str
    akismet_key: str


def create_site(session: Session, name: str, url: str, callback_url: str | None = None) -> tuple[Site, SiteKeys]:
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


def rotate_keys(session: Session, site: Site) -> SiteKeys:
    keys = SiteKeys(new_api_key(), new_akismet_key())
    site.api_key_hash = hash_key(keys.api_key)
    site.akismet_key_hash = hash_key(keys.akismet_key)
    session.flush()
    return keys


def site_by_api_key(session: Session, key: str) -> Site | None:
    return session.scalars(select(Site).where(Site.api_key_hash == hash_key(key), Site.active.is_(True))).first()


def site_by_akismet_key(session: Session, key: str) -> Site | None:
    return session.scalars(select(Site).where(Site.akismet_key_hash == hash_key(key), Site.active.is_(True))).first()
