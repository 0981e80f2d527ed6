"""Alembic environment: runs migrations on the URL given by service.migrate."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, event

from service.db import make_engine
from service.models import Base

config = context.config
target_metadata = Base.metadata


def _sqlite_driver_leaves_transactions_to_us(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite opens a transaction only before INSERT/UPDATE/DELETE: DDL before the first one would be committed at
    # once, and a migration failing half-way (a table rebuilt, the next not) would stay half-done.
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def _set_sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    # On the driver's connection, outside any transaction: SQLite ignores this pragma inside one.
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")  # type: ignore[union-attr]  # pysqlite's connection


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        event.listen(engine, "connect", _sqlite_driver_leaves_transactions_to_us)
        event.listen(engine, "begin", _sqlite_begin)
    with engine.connect() as connection:
        if sqlite:
            # Batch mode rebuilds a table as copy, DROP TABLE and rename; with foreign keys on, the DROP deletes
            # every row first and ON DELETE CASCADE takes the rows that reference them (events, labels, ...).
            # Off for the migrations, and foreign_key_check before the commit proves no reference was broken.
            _set_sqlite_foreign_keys(connection, on=False)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,
            # With BEGIN emitted by us, SQLite's DDL is transactional: all the migrations of a run, or none.
            transactional_ddl=True if sqlite else None,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"the migrations broke foreign keys (table, rowid, parent, fk): {broken[:10]}")
        if sqlite:
            _set_sqlite_foreign_keys(connection, on=True)
    engine.dispose()


run_migrations_online()
