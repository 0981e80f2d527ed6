"""The database engine and sessions: one engine per process, created lazily (after any fork)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from service.config import settings

# The database cannot be reached or used: refused, dropped or terminated connections, locked, pool exhausted.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
_factories: dict[tuple[int, str], sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; busy_timeout makes writers queue instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine with the settings each backend needs.

    ``hide_parameters``: a database error's message, logged with its traceback by the web and the workers, lists
    the statement's parameters: a comment's text, e-mail and IP (which retention erases from the database after
    BOUNCER_RETAIN_PERSONAL_DATA_DAYS, not from logs), a new callback secret, a password hash.
    """
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 15}, pool_size=20, hide_parameters=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True)


def engine(url: str | None = None) -> Engine:
    """The engine of this process for ``url`` (default: the configured database)."""
    url = url or settings().database_url
    key = (os.getpid(), url)
    with _lock:
        if key not in _engines:
            _engines[key] = make_engine(url)
            _factories[key] = sessionmaker(_engines[key], expire_on_commit=False)
        return _engines[key]


def new_session(url: str | None = None) -> Session:
    url = url or settings().database_url
    engine(url)
    return _factories[(os.getpid(), url)]()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error, so nothing is half-stored."""
    session = new_session(url)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    """Forget engines (tests switch databases; forked children must not reuse the parent's sockets)."""
    with _lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()
        _factories.clear()


def database_error_reason(exc: BaseException) -> str:
    """What went wrong, in one line: the driver's own message for a database error (refused, no such table, bad
    password), not SQLAlchemy's wrapper with the SQL, its parameters and a link."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:200]}" if lines else type(cause).__name__
