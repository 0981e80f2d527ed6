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
from sqlalchemy import create_engine, inspect, make_url, text
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
