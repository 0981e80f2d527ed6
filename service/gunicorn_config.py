"""gunicorn hooks for the request metrics: every worker is a process with its own counters, and a scrape, answered
by any one of them, must show the sum. prometheus_client's multiprocess mode does that through files in one
directory (``PROMETHEUS_MULTIPROC_DIR``) that each worker writes and ``/metrics`` reads.

``bouncer web`` and ``bouncer up`` load this module (``--config python:service.gunicorn_config``); run gunicorn by
hand with the same option. No ``--preload``: the app must be imported after ``on_starting`` has set the directory.
Only names of gunicorn settings become settings; the rest of this module is ignored by gunicorn.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Not service.metrics.MULTIPROC_DIR_ENV: importing service.metrics imports prometheus_client, which reads the
# variable once, at import; the master must not import it before the variable is set.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_created: list[str] = []  # the directory this master made for itself, removed when it exits
_held: list[int] = []  # the open lock file that marks that directory as in use (its workers share it)
LOCK_NAME = ".in-use"
_mark_process_dead: Callable[[int], None] | None = None  # prometheus_client's, imported once the directory is set


def on_starting(server: Any) -> None:
    """In the master, before any worker: point the workers at a private, empty metrics directory.

    An operator's own directory (the variable set) is used as it is, created if missing and never emptied: it may
    hold what the operator wants kept, and a wrong path must not cost them files. Otherwise a fresh directory of
    this master alone (mode 0700): the files of an earlier run, or of another gunicorn on the machine, would add
    their counts to this one's. The directories that killed masters left behind are removed first.
    """
    global _mark_process_dead
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
    else:
        _remove_abandoned_directories()
        path = tempfile.mkdtemp(prefix="bouncer-metrics-")
        _held.append(_lock_in_use(path))
        _created.append(path)
        os.environ[MULTIPROC_DIR_ENV] = path  # the workers are forked from this process: they inherit it
    # Imported here, not in child_exit: that runs in the SIGCHLD handler, and two workers exiting together made a
    # second handler import prometheus_client while the first was half-way through (ImportError, a circular import).
    from prometheus_client.multiprocess import mark_process_dead

    _mark_process_dead = mark_process_dead


def _lock_in_use(path: str) -> int:
    """Lock a lock file in the directory for as long as this master or any of its workers lives.

    The lock belongs to the open file, which the forked workers share, so the kernel releases it when the last of
    them exits, however: a SIGKILLed master never runs ``on_exit``. The file is locked under another name and then
    renamed, so a lock file another master can see is always locked already.
    """
    pending = os.path.join(path, LOCK_NAME + ".new")
    fd = os.open(pending, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(pending, os.path.join(path, LOCK_NAME))
    return fd


def _remove_abandoned_directories() -> None:
    """Remove the directories of masters that are gone without removing their own (killed, or a crashed machine).

    Only this user's directories with a lock file nobody holds: a live master's is locked, one being made has no
    lock file yet, and an operator's own directory is never one of these (it is not made here).
    """
    for directory in Path(tempfile.gettempdir()).glob("bouncer-metrics-*"):
        lock = directory / LOCK_NAME
        try:
            if not directory.is_dir() or directory.is_symlink() or directory.stat().st_uid != os.getuid():
                continue
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its master or one of its workers still runs
        else:
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            os.close(fd)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: prometheus_client drops its live gauges (its counters and histograms stay in the sums)."""
    if _mark_process_dead is not None:
        _mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """The master stops: remove the directory it made."""
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)
    for fd in _held:
        os.close(fd)
    _created.clear()
    _held.clear()
