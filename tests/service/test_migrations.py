"""The Alembic migrations build exactly the schema the models describe, and every one of them can be undone."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect, make_url, text
from sqlalchemy.engine import URL

from service.config import settings
from service.migrate import alembic_config, upgrade
from service.models import Base


def _differences(url: str | URL) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            # SQLite cannot reflect an index on an expression (lower(author_email)): Alembic warns and skips it.
            warnings.filterwarnings("ignore", message=".*expression-based index.*")
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


@pytest.fixture
def scratch_database(bouncer_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """An empty database of the session's kind (SQLite file, or a PostgreSQL database of its own)."""
    url = make_url(settings().database_url)
    if url.get_backend_name() != "postgresql":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    name = f"{url.database}_migrations"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def test_the_migrated_schema_is_the_models_schema(bouncer_env: dict[str, str]) -> None:
    """A column or index added to a model without a migration (or the other way round) shows here."""
    assert _differences(settings().database_url) == []


def test_every_migration_downgrades_and_upgrades_again(scratch_database: str) -> None:
    upgrade(scratch_database)
    engine = create_engine(scratch_database)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"comments", "retrain_runs", "alembic_version"} <= tables
        command.downgrade(alembic_config(scratch_database), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(scratch_database)
    assert _differences(scratch_database) == []


def test_ips_stored_before_service_ips_are_rewritten_canonical(scratch_database: str) -> None:
    """0006: the lookups that compare author_ip exactly (other comments of an IP, Akismet submit-spam/ham) find
    rows stored before as the ones stored since; values that are no address are left as they were."""
    from service.models import Comment, ListEntry, Site

    upgrade(scratch_database, "0005")
    # The models' tables stand for revision 0005 here (nothing was added to them since); a column added later must
    # be left out of these inserts.
    engine = create_engine(scratch_database)
    old_ips = {
        "::ffff:203.0.113.7": "203.0.113.7",
        "2001:DB8:0:0:0:0:0:1": "2001:db8::1",
        " 198.51.100.2 ": "198.51.100.2",
        "198.51.100.3": "198.51.100.3",
        "fe80::1%eth0": "fe80::1%eth0",
        "unknown": "unknown",
        "": "",
    }
    # Past one batch of the migration (1000 rows), so that its second batch starts where the first ended.
    old_ips |= {f"::ffff:10.0.{n // 256}.{n % 256}": f"10.0.{n // 256}.{n % 256}" for n in range(1200)}
    entries = {  # old value -> the value after, None when deleted (its canonical entry exists already)
        "::ffff:192.0.2.9": "192.0.2.9",
        "::ffff:192.0.2.0/120": "192.0.2.0/24",
        "2001:DB8::/32": "2001:db8::/32",
        "::ffff:198.51.100.2": None,
        "198.51.100.2": "198.51.100.2",
        "not an ip": "not an ip",
    }
    try:
        with engine.begin() as conn:
            site_id = conn.execute(
                insert(Site)
                .values(
                    name="old",
                    url="https://old.example",
                    api_key_hash="a" * 64,
                    akismet_key_hash="b" * 64,
                    callback_secret="s",
                )
                .returning(Site.id)
            ).scalar_one()
            conn.execute(
                insert(Comment), [{"site_id": site_id, "content": f"from {ip!r}", "author_ip": ip} for ip in old_ips]
            )
            notes = {"::ffff:198.51.100.2": "spam wave, March", "198.51.100.2": "proxy"}
            for value in entries:
                conn.execute(
                    insert(ListEntry).values(
                        site_id=site_id, action="block", kind="ip", value=value, note=notes.get(value, "")
                    )
                )
            # The same spelling in another kind of list is no IP entry: not touched.
            conn.execute(
                insert(ListEntry).values(site_id=site_id, action="block", kind="author", value="::FFFF:1.2.3.4")
            )
        upgrade(scratch_database)
        with engine.connect() as conn:
            stored: dict[str, str] = dict(conn.execute(text("SELECT content, author_ip FROM comments")).all())
            assert stored == {f"from {old!r}": new for old, new in old_ips.items()}
            rows = conn.execute(text("SELECT kind, value FROM list_entries ORDER BY id")).all()
            assert rows == [("ip", new) for new in entries.values() if new is not None] + [("author", "::FFFF:1.2.3.4")]
            # the deleted duplicate's note is kept on the entry that stays
            note = conn.execute(text("SELECT note FROM list_entries WHERE value = '198.51.100.2'")).scalar_one()
            assert note == "proxy; spam wave, March"
    finally:
        engine.dispose()
