"""Test-only worker entry point: the real worker, whose pool processes die, or fail, while scoring marked comments.

``celery -A tests.service.crashing_worker:celery worker --pool prefork`` runs the production app unchanged. In each
pool process, the text of a pending comment carrying a marker is loaded as text that kills the process (SIGKILL,
what the OOM killer sends; a segfault ends it as abruptly) as soon as anything reads it -- the rules, the stream
checks or the models, wherever a native library would choke on it -- while storing a decision does not read it.
A comment marked ``BREAKS_EVERY_TIME`` instead makes the reader raise (pathological input the scorer cannot handle,
the process lives on); one marked ``BREAKS_WHILE_BROKEN`` makes it raise while the file ``SCORER_BROKEN_FILE`` exists in
the test's directory (a broken model, until it is fixed).
Only pool processes install the hook (``worker_process_init``), so importing this module elsewhere changes nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy import event
from sqlalchemy.orm.attributes import set_committed_value

from service.models import Comment
from workers.celery_app import celery

__all__ = [
    "celery",
    "KILLS_EVERY_TIME",
    "KILLS_ONCE",
    "BREAKS_EVERY_TIME",
    "BREAKS_WHILE_BROKEN",
    "SCORER_BROKEN_FILE",
    "FAULTS_DIR_VARIABLE",
]

KILLS_EVERY_TIME = "[kills-the-scorer]"
KILLS_ONCE = "[kills-the-scorer-once]"
BREAKS_EVERY_TIME = "[breaks-the-scorer]"
BREAKS_WHILE_BROKEN = "[breaks-the-scorer-while-broken]"
SCORER_BROKEN_FILE = "scorer-broken"  # in the test's directory: while it exists, BREAKS_WHILE_BROKEN comments raise
# Where the pool processes note which comments already killed one (BOUNCER_TEST_*: not a setting of the service).
FAULTS_DIR_VARIABLE = "BOUNCER_TEST_FAULTS_DIR"


class PoisonText(str):
    """A comment's text that kills the process reading it (every later reader, for a ``KILLS_ONCE`` comment), or
    that makes every reader raise (``BREAKS_EVERY_TIME``), or every reader while the scorer is broken
    (``BREAKS_WHILE_BROKEN``)."""

    comment_id: int
    once: bool
    breaks: bool
    while_broken: bool


class ScorerBroken(ValueError):
    """What reading a ``BREAKS_EVERY_TIME`` comment raises."""


def _first_reader(comment_id: int) -> bool:
    """True for one reader of the comment across every process (a file in the test's directory notes it)."""
    try:
        os.close(os.open(Path(os.environ[FAULTS_DIR_VARIABLE]) / f"killed-{comment_id}", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def _reader(name: str) -> Any:
    def read(text: PoisonText, *args: Any, **kwargs: Any) -> Any:
        if text.breaks:
            raise ScorerBroken(f"comment {text.comment_id}: the scorer cannot handle this text")
        if text.while_broken:
            if (Path(os.environ[FAULTS_DIR_VARIABLE]) / SCORER_BROKEN_FILE).exists():
                raise ScorerBroken(f"comment {text.comment_id}: the scorer is broken")
            return getattr(str, name)(text, *args, **kwargs)
        if not text.once or _first_reader(text.comment_id):
            os.kill(os.getpid(), signal.SIGKILL)
        return getattr(str, name)(text, *args, **kwargs)

    return read


# What reading a text goes through: slicing, iterating and the string methods the scoring calls.
for _name in ("__getitem__", "__iter__", "lower", "casefold", "upper", "strip", "split", "encode", "replace"):
    setattr(PoisonText, _name, _reader(_name))


def _poison_marked(comment: Comment, _context: Any) -> None:
    markers = (KILLS_EVERY_TIME, KILLS_ONCE, BREAKS_EVERY_TIME, BREAKS_WHILE_BROKEN)
    if comment.status != "pending" or not any(marker in comment.content for marker in markers):
        return
    text = PoisonText(comment.content)
    text.comment_id, text.once = comment.id, KILLS_EVERY_TIME not in comment.content
    text.breaks = BREAKS_EVERY_TIME in comment.content
    text.while_broken = BREAKS_WHILE_BROKEN in comment.content
    set_committed_value(comment, "content", text)


@worker_process_init.connect
def _install(**_: Any) -> None:
    event.listen(Comment, "load", _poison_marked)
