"""Alembic migrations, run in-process (``bouncer db upgrade`` and ``bouncer up``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from service.config import settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or settings().database_url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; safe to run on every start."""
    url = url or settings().database_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    """The newest migration of this code."""
    head = _script().get_current_head()
    assert head is not None
    return head


def schema_problem(session: Session) -> str | None:
    """Why the database's schema is older than this code needs (none, or behind), or None when it is not.

    A revision this code does not know is newer (a rolling upgrade migrated before replacing this process): not a
    problem here, or every old web process would leave the load balancer at once.
    """
    if not inspect(session.connection()).has_table("alembic_version"):
        return "the database has no schema: run `bouncer db upgrade`"
    current = sorted(session.scalars(text("SELECT version_num FROM alembic_version")))
    head = head_revision()
    if head in current:
        return None
    known = []
    for revision in current:
        try:
            _script().get_revision(revision)
        except CommandError:  # no script of this revision: the schema is newer than this code
            return None
        known.append(revision)
    found = ", ".join(known) or "none"
    return f"the schema is at revision {found}, this code needs {head}: run `bouncer db upgrade`"
