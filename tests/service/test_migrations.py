"""The Alembic migrations build exactly the schema the models describe, and every one of them can be undone."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, delete, func, insert, inspect, make_url, select, text
from sqlalchemy.engine import URL

from service.config import settings
from service.db import make_engine
from service.migrate import alembic_config, upgrade
from service.models import Base
from tests.conftest import REPO


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


def test_revisions_import_no_application_code() -> None:
    """A revision must do the same to a database whenever it runs: one importing the application's code (0006 used
    service.ips) would change when that code changes. What it needs of it is a frozen copy in the revision."""
    versions = sorted((REPO / "service" / "migrations" / "versions").glob("*.py"))
    assert versions
    for path in versions:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in {"service", "classifiers", "workers"}, f"{path.name}: {module}"


def test_ips_stored_before_service_ips_are_rewritten_canonical(scratch_database: str) -> None:
    """0006: the lookups that compare author_ip exactly (other comments of an IP, Akismet submit-spam/ham) find
    rows stored before as the ones stored since; values that are no address are left as they were."""
    from service.models import Comment, ListEntry

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
            site_id = _old_site(conn)
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


def _schema(url: str) -> dict[str, Any]:
    """Each table's indexes, unique constraints and foreign keys (with ON DELETE), as the database reports them."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*expression-based index.*")  # listed below instead
            found = inspect(conn)
            schema: dict[str, Any] = {}
            for table in sorted(found.get_table_names()):
                indexes = found.get_indexes(table)
                fks = found.get_foreign_keys(table)
                uniques = found.get_unique_constraints(table)
                schema[table] = {
                    "indexes": sorted((i["name"], tuple(map(str, i["column_names"])), i["unique"]) for i in indexes),
                    "uniques": sorted(tuple(u["column_names"]) for u in uniques),
                    "fks": sorted(
                        (tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                        for f in fks
                    ),
                }
            if conn.dialect.name == "sqlite":  # inspect() skips the index on lower(author_email) there
                names = "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                schema["sqlite_index_names"] = sorted(conn.execute(text(names)).all())
            return schema
    finally:
        engine.dispose()


def _old_site(conn: Any) -> int:
    """A site inserted with Core, as any revision's schema takes it (the models stand for the newest)."""
    from service.models import Site

    return int(
        conn.execute(
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
    )


def _tables_that_never_give_an_id_twice(url: str) -> set[str]:
    """SQLite: the tables declared AUTOINCREMENT. PostgreSQL: those whose id comes from a sequence (serial or
    identity), which never gives a number twice."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all()
                return {name for name, sql in rows if "AUTOINCREMENT" in sql}
            sequenced = (
                "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND column_name = 'id' AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')"
            )
            return set(conn.execute(text(sequenced)).scalars())
    finally:
        engine.dispose()


def test_tables_whose_rows_get_deleted_never_give_an_id_twice(bouncer_env: dict[str, str]) -> None:
    """On SQLite, AUTOINCREMENT exactly where the models say (autogenerate does not compare sqlite_autoincrement: a
    model given it without a migration shows here); on PostgreSQL, sequences for the same tables."""
    url = settings().database_url
    wanted = {t.name for t in Base.metadata.sorted_tables if t.dialect_options["sqlite"]["autoincrement"]}
    assert {"comments", "moderation_events", "labels", "callback_deliveries", "list_entries"} <= wanted
    if url.startswith("sqlite"):
        assert _tables_that_never_give_an_id_twice(url) == wanted
    else:
        assert _tables_that_never_give_an_id_twice(url) >= wanted


def test_0008_keeps_every_row_index_and_foreign_key_and_ids_of_deleted_rows_are_not_given_again(
    scratch_database: str,
) -> None:
    """0008 rebuilds the tables whose rows get deleted (SQLite): before it, deleting the newest comment handed its
    id to the next comment, its events and deliveries; after it, ids only rise, and ON DELETE CASCADE still works."""
    from service.models import CallbackDelivery, Comment, Label, ListEntry, ModerationEvent, RetrainRun

    upgrade(scratch_database, "0007")
    engine = make_engine(scratch_database)  # foreign keys on, as the service runs
    # Core inserts: the models stand for 0007 too (0008 only changes how SQLite picks ids)
    children = (ModerationEvent, Label, CallbackDelivery)

    def add_comment(conn: Any, site_id: int, n: int) -> dict[str, int]:
        ids = {
            "comment": conn.execute(
                insert(Comment).values(site_id=site_id, content=f"comment {n}")
            ).inserted_primary_key[0]
        }
        values = {"comment_id": ids["comment"], "site_id": site_id}
        ids["event"] = conn.execute(
            insert(ModerationEvent).values(**values, actor="model", action="decide")
        ).inserted_primary_key[0]
        ids["label"] = conn.execute(
            insert(Label).values(**values, label="spam", source="moderator")
        ).inserted_primary_key[0]
        ids["delivery"] = conn.execute(
            insert(CallbackDelivery).values(**values, event_id=ids["event"])
        ).inserted_primary_key[0]
        return ids

    def add_entry(conn: Any, site_id: int, ip: str) -> int:
        stmt = insert(ListEntry).values(site_id=site_id, action="block", kind="ip", value=ip)
        return int(conn.execute(stmt).inserted_primary_key[0])

    def n_rows(conn: Any, model: Any, comment_id: int) -> int:
        return int(conn.execute(select(func.count()).where(model.comment_id == comment_id)).scalar_one())

    def rows(conn: Any) -> dict[str, list[Any]]:
        return {
            table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2")).all()]
            for table in ("comments", "moderation_events", "labels", "callback_deliveries", "list_entries", "sites")
        }

    try:
        with engine.begin() as conn:
            site_id = _old_site(conn)
            made = [add_comment(conn, site_id, n) for n in range(5)]
            entries = [add_entry(conn, site_id, f"192.0.2.{n}") for n in range(3)]
            # the newest comment (its event, label, delivery) and list entry deleted, as the purge and an admin do
            conn.execute(delete(Comment).where(Comment.id == made[-1]["comment"]))
            conn.execute(delete(ListEntry).where(ListEntry.id == entries[-1]))
            # a retrain read labels up to one that is gone now: new labels must still count as newer
            conn.execute(insert(RetrainRun).values(kind="spam", last_label_id=made[-1]["label"]))
        with engine.connect() as conn:
            before_rows, before_schema = rows(conn), _schema(scratch_database)
            assert sum(len(before_rows[t]) for t in ("moderation_events", "labels", "callback_deliveries")) == 12

        upgrade(scratch_database, "0008")

        assert _schema(scratch_database) == before_schema
        with engine.begin() as conn:
            assert rows(conn) == before_rows
            if conn.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
            # Ids deleted before 0008 above the largest kept one are known nowhere, but the retrain's last label id.
            new = add_comment(conn, site_id, 5)
            assert new["label"] > made[-1]["label"]
            # Deleted from now on, the newest rows' ids are not given again: on 0007 SQLite gave the next row each.
            conn.execute(delete(Comment).where(Comment.id == new["comment"]))
            newer = add_comment(conn, site_id, 6)
            assert all(newer[kind] > new[kind] for kind in new), (new, newer)
            entry = add_entry(conn, site_id, "192.0.2.8")
            conn.execute(delete(ListEntry).where(ListEntry.id == entry))
            assert add_entry(conn, site_id, "192.0.2.9") > entry
            # deleting a comment still takes its event, label and delivery with it
            conn.execute(delete(Comment).where(Comment.id == made[0]["comment"]))
            for model in children:
                assert [n_rows(conn, model, made[n]["comment"]) for n in (0, 1)] == [0, 1], model
            kept = rows(conn)

        command.downgrade(alembic_config(scratch_database), "0007")
        with engine.connect() as conn:
            assert _schema(scratch_database) == before_schema
            assert rows(conn) == kept
            if conn.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()
    if scratch_database.startswith("sqlite"):
        assert _tables_that_never_give_an_id_twice(scratch_database) == set()
        upgrade(scratch_database)
        assert "comments" in _tables_that_never_give_an_id_twice(scratch_database)
