"""Retraining from human labels, with an evaluation gate: a bad model never reaches production by itself.

``retrain(kind)`` trains a candidate with the same pipeline code (``classifiers.train_model``) on the
training-allowed base data plus the sites' human labels, evaluates candidate and active model on the same frozen
data (the base files' ``test`` split and the newest site labels, which training never sees), writes a report to
the ``RetrainRun`` and the candidate's manifest, and promotes the candidate only when it is better on the site
holdout and not worse than a tolerance on every frozen set; otherwise the candidate waits for an admin
(``needs_review``) with the reasons. A failure leaves the active model untouched and is stored on the run.

One retrain runs at a time, and the database alone says so: a running run holds ``running_slot`` (a unique index
admits one holder) and its worker writes ``heartbeat_at`` every ``HEARTBEAT_SECONDS`` from a thread of its own, also
through training steps that report no progress for minutes. A running run whose heartbeat is older than
``DEAD_AFTER_SECONDS`` lost its worker: the next retrain, the nightly check, a redelivered task or an admin page ends
it as failed ("interrupted") and frees the slot, about a minute and a half after the worker died. Redis plays no part:
a Redis restart that loses everything neither ends a live run nor lets a second retrain start beside it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from classifiers import KINDS, CommentInput, Dataset, LoadedModel, ModelRegistry, Thresholds, evaluate, load_csv
from classifiers.base_data import BASE_TRAINING, load_base_training
from classifiers.data import SOURCES
from classifiers.normalize import normalize_text
from classifiers.training import train_model
from service.config import settings
from service.db import session_scope
from service.models import Comment, Label, RetrainRun
from service.scoring import comment_input, registry

log = logging.getLogger(__name__)

# Which human labels teach which model: a comment labelled "abuse" says nothing about spam, and vice versa.
KIND_LABELS: dict[str, dict[str, int]] = {"spam": {"spam": 1, "ham": 0}, "abuse": {"abuse": 1, "ham": 0}}
SITE_SOURCE = "site-labels"  # the Dataset source of human labels (one source: balanced like one corpus)
HOLDOUT_SET = "site holdout"
HIGHER_IS_BETTER = ("roc_auc", "pr_auc", "recall_at_reject")
STEPS = 6
COMPLETED = ("promoted", "needs_review")  # a run that ended with a candidate trained on its labels

RUNNING_SLOT = 1  # retrain_runs.running_slot of the running run (NULL on every other): the unique index allows one
HEARTBEAT_SECONDS = 10.0  # how often a running run's worker writes heartbeat_at
# A running run whose heartbeat is older than this lost its worker. Many heartbeats: a busy database or a paused
# process may miss a few without its run being ended under it. Clocks of the machines must agree within a few seconds.
DEAD_AFTER_SECONDS = 90.0
STALE_QUEUED_SECONDS = 6 * 3600
# A run queued this long while no run runs lost its task (a Redis restart that kept nothing): the sweeper sends it
# again (``lost_runs``), at most once per this many seconds. A run waiting for another one is not lost: its task
# retries every 30 s (workers.retrain_tasks) and starts it within that once the other run ends.
RESEND_QUEUED_SECONDS = 5 * 60
INTERRUPTED = "interrupted: the worker stopped during the run"

Trainer = Callable[..., tuple[Any, dict[str, Any]]]  # classifiers.train_model's signature


class RetrainBusy(RuntimeError):
    """Another retrain is running (or one of the kind is queued): try again later."""


class RunInterrupted(RuntimeError):
    """This run was ended as interrupted while it ran (no heartbeat got through for too long): it must stop."""


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the active model a candidate may be on a frozen base test set."""

    roc_auc: float = 0.01  # largest allowed drop
    pr_auc: float = 0.02  # largest allowed drop
    ham_rejected: float = 0.005  # largest allowed rise of real comments rejected (at each model's thresholds)
    positives_approved: float = 0.02  # largest allowed rise of spam/abuse approved
    # A rate that rose by fewer comments than this is not a regression, whatever the rate: on SMS's 94 test spams,
    # 2 more approved is a rise of 2.1% and sampling noise.
    min_comments: int = 3


@dataclass(frozen=True)
class RetrainOptions:
    """Knobs of one retrain; the defaults are the production ones."""

    holdout_fraction: float = 0.2  # newest share of the labels kept out of training, for the gate
    min_holdout: int = 10  # fewer newest labels than this cannot show "better": the run needs review
    max_holdout: int = 2000
    label_weight: float = 2.0  # a site's own human label counts more than a corpus row
    half_life_days: float = 90.0  # recent labels weigh more: the weight halves every half-life...
    min_recency: float = 0.25  # ...down to this floor (old labels still teach)
    source_weights: Mapping[str, float] = field(
        default_factory=lambda: {"moderator": 1.0, "blog": 1.0, "akismet": 1.0, "import": 0.5}
    )
    tolerance: Tolerance = field(default_factory=Tolerance)
    base_fraction: float = 1.0  # share of the base rows used (tests use less; production uses all)
    site_ids: tuple[int, ...] | None = None  # only these sites' labels (None: every site)
    random_state: int = 0


@dataclass(frozen=True)
class LabelRow:
    """One current human label with what the classifiers see of its comment."""

    label_id: int
    comment_id: int
    site_id: int
    y: int
    source: str
    created_at: datetime
    comment: CommentInput


# --- labels ------------------------------------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def collect_labels(session: Session, kind: str, site_ids: Sequence[int] | None = None) -> list[LabelRow]:
    """Current (not superseded) human labels that teach ``kind``, oldest first.

    Test comments are excluded even if a label row exists; automatic decisions never made a label row.
    """
    mapping = KIND_LABELS[kind]
    stmt = (
        select(Label, Comment)
        .join(Comment, Comment.id == Label.comment_id)
        .where(Label.superseded.is_(False), Comment.is_test.is_(False), Label.label.in_(sorted(mapping)))
        .order_by(Label.created_at, Label.id)
    )
    if site_ids is not None:
        stmt = stmt.where(Label.site_id.in_(list(site_ids)))
    return [
        LabelRow(
            label_id=label.id,
            comment_id=comment.id,
            site_id=label.site_id,
            y=mapping[label.label],
            source=label.source,
            created_at=_aware(label.created_at),
            comment=comment_input(comment),
        )
        for label, comment in session.execute(stmt).tuples()
    ]


def split_holdout(labels: Sequence[LabelRow], options: RetrainOptions) -> tuple[list[LabelRow], list[LabelRow]]:
    """(train, holdout): the newest labels are held out; training drops any label whose text the holdout has.

    Time order, not a random split: the gate must ask "does it catch what comes next?", and a campaign repeats
    texts, so a random split would leak the holdout into training.
    """
    n = len(labels)
    size = min(options.max_holdout, max(options.min_holdout, round(options.holdout_fraction * n)))
    if n < 2 * options.min_holdout:
        size = 0
    train, holdout = list(labels[: n - size]), list(labels[n - size :])
    held_texts = {normalize_text(r.comment.text) for r in holdout}
    return [r for r in train if normalize_text(r.comment.text) not in held_texts], holdout


def label_weights(rows: Sequence[LabelRow], options: RetrainOptions, now: datetime | None = None) -> np.ndarray:
    """Weight of each label: label weight x source trust x recency (halves every half-life, with a floor)."""
    now = now or datetime.now(UTC)
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        age_days = max(0.0, (now - r.created_at).total_seconds() / 86400.0)
        recency = max(options.min_recency, 0.5 ** (age_days / options.half_life_days))
        out[i] = options.label_weight * options.source_weights.get(r.source, 1.0) * recency
    return out


def labels_dataset(rows: Sequence[LabelRow], split: str) -> Dataset:
    """Labels as a ``Dataset`` of one source; its file entry names the label ids by a hash (the data snapshot)."""
    digest = hashlib.sha256(",".join(f"{r.label_id}:{r.y}" for r in rows).encode()).hexdigest()
    return Dataset(
        comments=[r.comment for r in rows],
        labels=np.asarray([r.y for r in rows], dtype=np.int64),
        splits=[split] * len(rows),
        sources=[SITE_SOURCE] * len(rows),
        files=[
            {
                "path": "database:labels",
                "source": SITE_SOURCE,
                "sha256": digest,
                "rows": len(rows),
                "licence": "the sites' own moderation decisions",
                "citation": "",
            }
        ],
    )


# --- base data ---------------------------------------------------------------------------------------------------


def base_files(kind: str, data_dir: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(the kind's base-training files, as in ``classifiers.base_data``; its evaluation-only files)."""
    root = data_dir or settings().shared_data_dir
    known = sorted(p for p in (root / kind).glob("*.csv") if p.stem in SOURCES)
    return (
        [root / f.path for f in BASE_TRAINING[kind]],
        [p for p in known if not SOURCES[p.stem]["train_allowed"]],
    )


def _sample(data: Dataset, fraction: float, random_state: int) -> Dataset:
    if fraction >= 1.0:
        return data
    keep = np.random.default_rng(random_state).random(len(data)) < fraction
    return data.subset(keep)


def load_base(kind: str, options: RetrainOptions) -> tuple[list[Dataset], list[Dataset]]:
    """(training-allowed datasets, evaluation-only test sets); each optionally sampled down for tests."""
    allowed, eval_only = base_files(kind)
    missing = [str(p) for p in allowed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"base training data for {kind} not found: {', '.join(missing)}")
    base = load_base_training(kind, settings().shared_data_dir)
    train = [_sample(d, options.base_fraction, options.random_state) for d in base]
    extra = [_sample(load_csv(p, "test"), options.base_fraction, options.random_state) for p in eval_only]
    return train, [d for d in extra if len(d)]


# --- evaluation and the gate -------------------------------------------------------------------------------------


class _Scores:
    """Probabilities computed once, handed to ``classifiers.evaluate`` as a scorer."""

    def __init__(self, p: np.ndarray) -> None:
        self.p = p

    def predict_proba(self, comments: Sequence[CommentInput]) -> np.ndarray:
        return self.p


def set_metrics(p: np.ndarray, data: Dataset, thresholds: Thresholds, by_identity: bool = False) -> dict[str, Any]:
    """The library's metrics plus recall at the reject threshold and the confusion at the thresholds
    (``by_identity``: and the bias per identity group the comments name)."""
    m = evaluate(_Scores(p), data, thresholds, by_identity=by_identity)
    m.pop("by_sublabel", None)
    m.pop("by_source", None)
    y = data.labels.astype(bool)
    decisions = np.where(p >= thresholds.reject_at, "reject", np.where(p < thresholds.approve_below, "approve", "hold"))
    m["confusion"] = {
        truth: {d: int(((decisions == d) & (y == is_pos)).sum()) for d in ("reject", "hold", "approve")}
        for truth, is_pos in (("positive", True), ("negative", False))
    }
    m["recall_at_reject"] = round(float((p[y] >= thresholds.reject_at).mean()), 4) if y.any() else None
    return m


def _value(metrics: Mapping[str, Any], metric: str) -> float | None:
    value = metrics["operating_point"][metric] if metric in ("ham_rejected", "positives_approved") else metrics[metric]
    return None if value is None else float(value)


def _check(
    name: str, metric: str, cand: Mapping[str, Any], act: Mapping[str, Any], limit: float, min_comments: int = 0
) -> dict[str, Any]:
    """Candidate vs active on one metric; ``limit`` is how much worse the candidate may be. For the rates of
    comments (ham rejected, positives approved), a rise of fewer than ``min_comments`` comments is allowed too."""
    c, a = _value(cand, metric), _value(act, metric)
    ok = True
    if c is not None and a is not None:
        ok = c >= a - limit if metric in HIGHER_IS_BETTER else c <= a + limit
        if not ok and metric in ("ham_rejected", "positives_approved") and "n" in cand and "positives" in cand:
            of = cand["positives"] if metric == "positives_approved" else cand["n"] - cand["positives"]
            ok = round((c - a) * of) < min_comments
    return {"set": name, "metric": metric, "candidate": c, "active": a, "tolerance": limit, "ok": bool(ok)}


def _reason(s: Mapping[str, Any], check: Mapping[str, Any]) -> str:
    c, a = check["candidate"], check["active"]
    if s["role"] == "site_holdout" and check["metric"] == "brier":
        return f"not better on the {s['name']} ({s['n']} newest labels): Brier {c:.4f} vs active {a:.4f}"
    change = "drop" if check["metric"] in HIGHER_IS_BETTER else "rise"
    return (
        f"worse on {s['name']}: {check['metric']} {c:.4f} vs active {a:.4f} "
        f"({change} {abs(c - a):.4f} > tolerance {check['tolerance']})"
    )


def gate(sets: Sequence[dict[str, Any]], options: RetrainOptions, has_active: bool = True) -> tuple[bool, list[str]]:
    """Promote only if better on the site holdout and within tolerance on every gated frozen set.

    Each set is ``{"name", "role": "site_holdout"|"base_test"|"eval_only", "n", "candidate": metrics, "active":
    metrics}``; the gate adds its ``checks``. Returns (promote, the reasons not to).
    """
    if not has_active:
        return False, ["there is no active model to compare with: an admin must promote the first one"]
    t = options.tolerance
    reasons: list[str] = []
    if not any(s["role"] == "site_holdout" for s in sets):
        reasons.append(
            f"fewer than {2 * options.min_holdout} site labels: no holdout of the newest ones, "
            "so the candidate cannot be shown to be better"
        )
    for s in sets:
        c, a = s["candidate"], s["active"]
        if s["role"] == "site_holdout":
            # Strictly better (Brier: a proper score that works even when the holdout has one class),
            # and not rejecting more of the sites' real comments.
            s["checks"] = [
                _check(s["name"], "brier", c, a, 0.0),
                _check(s["name"], "ham_rejected", c, a, t.ham_rejected, t.min_comments),
            ]
            s["checks"][0]["ok"] = c["brier"] < a["brier"]
        elif s["role"] == "base_test":
            s["checks"] = [
                _check(s["name"], "roc_auc", c, a, t.roc_auc),
                _check(s["name"], "pr_auc", c, a, t.pr_auc),
                _check(s["name"], "ham_rejected", c, a, t.ham_rejected, t.min_comments),
                _check(s["name"], "positives_approved", c, a, t.positives_approved, t.min_comments),
            ]
        else:
            s["checks"] = []  # evaluation-only data: reported, not gated
        reasons += [_reason(s, ch) for ch in s["checks"] if not ch["ok"]]
    return not reasons, reasons


def compare(
    candidate: Any,
    candidate_thresholds: Thresholds,
    active: LoadedModel | None,
    frozen: Sequence[tuple[str, str, Dataset]],
    by_identity: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate candidate and active on the same frozen sets ``(name, role, data)``, each at its own thresholds;
    ``by_identity`` (abuse) adds each model's bias per identity group named, reported and not gated."""
    out = []
    for name, role, data in frozen:
        if len(data) == 0:
            continue
        p_c = np.asarray(candidate.predict_proba(data.comments)[:, 1])
        entry: dict[str, Any] = {
            "name": name,
            "role": role,
            "n": len(data),
            "positives": int(data.labels.sum()),
            "candidate": set_metrics(p_c, data, candidate_thresholds, by_identity),
            "active": None,
        }
        if active is not None:
            entry["active"] = set_metrics(active.predict_proba(data.comments), data, active.thresholds, by_identity)
        out.append(entry)
    return out


# --- runs, progress and liveness ---------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def create_run(kind: str, requested_by: str = "", session: Session | None = None) -> int:
    """A queued run (shown in the UI at once); refuses when one of this kind is already queued or running."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")

    def make(db: Session) -> int:
        # A queued run whose task was lost (broker flushed) must not block retraining forever.
        db.execute(
            update(RetrainRun)
            .where(
                RetrainRun.kind == kind,
                RetrainRun.status == "queued",
                RetrainRun.created_at < _now() - timedelta(seconds=STALE_QUEUED_SECONDS),
            )
            .values(status="failed", error="never started: its task was lost", finished_at=_now())
        )
        fail_interrupted_runs(db)
        busy = db.scalar(
            select(RetrainRun.id).where(RetrainRun.kind == kind, RetrainRun.status.in_(("queued", "running")))
        )
        if busy is not None:
            raise RetrainBusy(f"a {kind} retrain is already queued or running (run #{busy})")
        run = RetrainRun(kind=kind, status="queued", requested_by=requested_by[:200], progress="queued")
        db.add(run)
        db.flush()
        return run.id

    if session is not None:
        return make(session)
    with session_scope() as db:
        return make(db)


def lost_runs(db: Session) -> list[tuple[int, str, str]]:
    """``(id, kind, requested_by)`` of the queued runs whose task was lost: queued for ``RESEND_QUEUED_SECONDS``
    while no run is running. None while a run runs (the others wait for it, their tasks retrying)."""
    if db.scalar(select(RetrainRun.id).where(RetrainRun.status == "running").limit(1)) is not None:
        return []
    cutoff = _now() - timedelta(seconds=RESEND_QUEUED_SECONDS)
    rows = db.execute(
        select(RetrainRun.id, RetrainRun.kind, RetrainRun.requested_by)
        .where(RetrainRun.status == "queued", RetrainRun.created_at < cutoff)
        .order_by(RetrainRun.id)
    )
    return [(run_id, kind, requested_by) for run_id, kind, requested_by in rows]


def _dead() -> ColumnElement[bool]:
    """The running runs whose worker stopped: no heartbeat for DEAD_AFTER_SECONDS (none at all: a run started before
    heartbeats existed, dated by its creation)."""
    cutoff = _now() - timedelta(seconds=DEAD_AFTER_SECONDS)
    return (RetrainRun.status == "running") & or_(
        RetrainRun.heartbeat_at < cutoff, RetrainRun.heartbeat_at.is_(None) & (RetrainRun.created_at < cutoff)
    )


def fail_interrupted_runs(db: Session) -> None:
    """End as failed the runs left ``running`` by a worker that died, and free the running slot they held.

    Dead means no heartbeat for ``DEAD_AFTER_SECONDS``: a live run's worker writes one every ``HEARTBEAT_SECONDS``
    whatever the step, so a live run is not ended here, whatever happened to Redis (unless none of its heartbeats
    reached the database for that long: then it stops at its next step). The update checks the age again itself,
    so a heartbeat written after the read keeps its run.
    """
    dead = list(db.scalars(select(RetrainRun.id).where(_dead())))
    if dead:
        db.execute(
            update(RetrainRun)
            .where(RetrainRun.id.in_(dead), _dead())
            .values(status="failed", error=INTERRUPTED, finished_at=_now(), running_slot=None)
        )
        log.warning("retrain runs %s had no heartbeat for %g s: ended as interrupted", dead, DEAD_AFTER_SECONDS)


def start_run(run_id: int) -> bool:
    """Queued -> running, if the run is still queued (False when not: another delivery of its task started it).
    ``RetrainBusy`` when another run is running. A dead run is ended first, in its own transaction, so that its slot
    is free."""
    with session_scope() as db:
        fail_interrupted_runs(db)
    with session_scope() as db:
        return claim_run(db, run_id)


def claim_run(db: Session, run_id: int) -> bool:
    """The start itself, in the caller's transaction: one conditional update that takes the running slot.

    The slot's unique index refuses a second holder, so two starts at the same moment cannot both win, on either
    database, and no read decides it: PostgreSQL makes the second update wait for the first transaction, then refuses
    it with a unique violation (or lets it through if the first rolled back); SQLite has one writer at a time, so the
    second update runs after the first commit and meets the same violation. That violation is ``RetrainBusy``.
    """
    try:
        started = db.execute(
            update(RetrainRun)
            .where(RetrainRun.id == run_id, RetrainRun.status == "queued")
            .values(status="running", running_slot=RUNNING_SLOT, heartbeat_at=_now(), progress=f"0/{STEPS} starting")
        )
    except IntegrityError as exc:  # the only constraint this update can break: another run holds the slot
        with session_scope() as other:
            holder = other.scalar(select(RetrainRun.id).where(RetrainRun.running_slot == RUNNING_SLOT))
        raise RetrainBusy("another retrain is running" + (f" (run #{holder})" if holder else "")) from exc
    return bool(started.rowcount == 1)  # type: ignore[attr-defined]  # CursorResult has rowcount


def _update_run(run_id: int, **values: Any) -> None:
    with session_scope() as db:
        db.execute(update(RetrainRun).where(RetrainRun.id == run_id).values(**values))


def mark_failed(run_id: int, error: str) -> None:
    """The run ends as failed with a visible error (and frees the running slot); the active model is unchanged."""
    _update_run(run_id, status="failed", error=error[:4000], finished_at=_now(), running_slot=None)


def _release_slot(run_id: int) -> None:
    """Whatever happened, the run no longer holds the slot (its own row only: another run's slot is never freed)."""
    try:
        _update_run(run_id, running_slot=None)
    except Exception:  # database gone: the run is ended as interrupted once its heartbeat is old
        log.warning("could not free the running slot of retrain run %s", run_id, exc_info=True)


class _Heartbeat:
    """A daemon thread that writes the run's ``heartbeat_at`` every ``HEARTBEAT_SECONDS`` until stopped.

    A thread, not the progress steps: training one model can take minutes without a step. It stops by itself when
    its run is no longer running (ended as interrupted under it: ``lost``, which the next step turns into
    ``RunInterrupted``). A failed write (the database busy or away a moment) is retried at the next beat.
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"retrain-heartbeat-{run_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def beat(self) -> bool:
        """Write the heartbeat; False when the run is no longer running."""
        with session_scope() as db:
            result = db.execute(
                update(RetrainRun)
                .where(RetrainRun.id == self.run_id, RetrainRun.status == "running")
                .values(heartbeat_at=_now())
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]  # CursorResult has rowcount

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                if not self.beat():
                    self.lost = True
                    log.warning("retrain run %s is no longer running: its heartbeat stops", self.run_id)
                    return
            except Exception:
                log.warning("could not write the heartbeat of retrain run %s", self.run_id, exc_info=True)


class _Progress:
    """Writes ``k/n what`` to the run (the UI polls it), with a heartbeat, and times each step. A run ended as
    interrupted under its worker stops at its next step (``RunInterrupted``), before it registers or promotes."""

    def __init__(self, run_id: int, heartbeat: _Heartbeat) -> None:
        self.run_id = run_id
        self.heartbeat = heartbeat
        self.started = self.last = time.perf_counter()
        self.step = ""
        self.timings: dict[str, float] = {}

    def __call__(self, number: int, text: str) -> None:
        self._close()
        self.step = text
        with session_scope() as db:
            result = db.execute(
                update(RetrainRun)
                .where(RetrainRun.id == self.run_id, RetrainRun.status == "running")
                .values(progress=f"{number}/{STEPS} {text}"[:200], heartbeat_at=_now())
            )
            still_running = result.rowcount == 1  # type: ignore[attr-defined]  # CursorResult has rowcount
        if not still_running or self.heartbeat.lost:
            raise RunInterrupted(
                f"the run was ended as interrupted before step {number} ({text}): "
                f"no heartbeat reached the database for {DEAD_AFTER_SECONDS:g} s"
            )

    def _close(self) -> None:
        now = time.perf_counter()
        if self.step:
            self.timings[self.step] = round(now - self.last, 2)
        self.last = now

    def finish(self) -> dict[str, float]:
        self._close()
        self.step = ""
        self.timings["total"] = round(time.perf_counter() - self.started, 2)
        return self.timings


def progress_fraction(progress: str) -> tuple[int, int] | None:
    """(step, steps) of a run's progress text ``"k/n what"``, for a progress bar."""
    head = progress.split(" ", 1)[0]
    k, sep, n = head.partition("/")
    if sep and k.isdigit() and n.isdigit():
        return int(k), int(n)
    return None


# --- the retrain -------------------------------------------------------------------------------------------------


def retrain(
    kind: str,
    requested_by: str = "",
    *,
    run_id: int | None = None,
    options: RetrainOptions | None = None,
    trainer: Trainer = train_model,
    models: ModelRegistry | None = None,
) -> int:
    """Run one retrain of ``kind`` and return the run id; see the module docstring for the steps.

    ``RetrainBusy`` when another retrain is running (the run stays queued, for a later try; a run made here is
    ended as failed, since nobody would retry it). Any other failure ends the run as ``failed`` with the error; the
    active model is changed only by the final promotion.
    """
    options = options or RetrainOptions()
    own_run = run_id is None
    if run_id is None:
        run_id = create_run(kind, requested_by)
    with session_scope() as db:
        run = db.get(RetrainRun, run_id)
        if run is None:
            raise LookupError(f"no retrain run {run_id}")
        status = run.status
    if status != "queued":  # a redelivered task: the run already ran, or its worker died mid-run
        if status == "running":
            with session_scope() as db:
                fail_interrupted_runs(db)
        return run_id
    try:
        started = start_run(run_id)
    except RetrainBusy:
        if own_run:  # nobody will retry a run made here: end it visibly
            mark_failed(run_id, "another retrain was running")
        raise
    if not started:  # another delivery of the task started it meanwhile
        return run_id
    heartbeat = _Heartbeat(run_id)
    heartbeat.start()
    try:
        _run(run_id, kind, options, trainer, models or registry(), _Progress(run_id, heartbeat))
    except Exception as exc:  # any failure: visible on the run, the active model untouched
        log.exception("retrain run %s (%s) failed", run_id, kind)
        mark_failed(run_id, f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop()
        _release_slot(run_id)
    return run_id


def _run(
    run_id: int, kind: str, options: RetrainOptions, trainer: Trainer, models: ModelRegistry, step: _Progress
) -> None:
    step(1, "collecting labels")
    with session_scope() as db:
        # The schedule's mark, read before the labels: a label stored during the read is then trained on and still
        # counted as new (a retrain at worst a few labels early). One whose id came before the mark but whose
        # transaction commits after the read is not counted; every later run trains on it all the same.
        last_label_id = db.scalar(select(func.max(Label.id))) or 0
        labels = collect_labels(db, kind, options.site_ids)
        db.execute(
            update(RetrainRun)
            .where(RetrainRun.id == run_id)
            .values(last_label_id=last_label_id, label_count=len(labels))
        )
    train_rows, holdout_rows = split_holdout(labels, options)
    weights = label_weights(train_rows, options)

    step(2, "loading base data")
    base, eval_only = load_base(kind, options)

    step(3, f"training the candidate on base data and {len(train_rows)} labels")
    datasets = [*base]
    sample_weight = [np.ones(sum(len(d) for d in base))]
    if train_rows:
        datasets.append(labels_dataset(train_rows, "train"))
        sample_weight.append(weights)
    pipeline, manifest = trainer(
        kind, datasets, sample_weight=np.concatenate(sample_weight), random_state=options.random_state
    )
    for f in manifest.get("data", []):
        if f.get("source") == SITE_SOURCE:
            f["train_allowed"] = True  # the sites' own decisions: theirs to train on
    t = manifest["thresholds"]
    cand_thresholds = Thresholds(float(t["approve_below"]), float(t["reject_at"]))

    step(4, "evaluating candidate and active model on the frozen sets")
    try:
        active: LoadedModel | None = models.active(kind)
    except LookupError:
        active = None
    frozen: list[tuple[str, str, Dataset]] = []
    if holdout_rows:
        frozen.append((HOLDOUT_SET, "site_holdout", labels_dataset(holdout_rows, "test")))
    frozen += [(f"{d.sources[0]} (test)", "base_test", d.split("test")) for d in base if len(d)]
    frozen += [(f"{d.sources[0]} (test, evaluation only)", "eval_only", d) for d in eval_only]
    sets = compare(pipeline, cand_thresholds, active, frozen, by_identity=kind == "abuse")
    promote, reasons = gate(sets, options, has_active=active is not None)
    holdout_from = holdout_rows[0].created_at.isoformat() if holdout_rows else None
    report: dict[str, Any] = {
        "kind": kind,
        "active_version": active.version if active else None,
        "labels": {
            "total": len(labels),
            "train": len(train_rows),
            "holdout": len(holdout_rows),
            "holdout_from": holdout_from,
            "positives_train": int(sum(r.y for r in train_rows)),
            "positives_holdout": int(sum(r.y for r in holdout_rows)),
            "by_source": _count(r.source for r in labels),
            "sites": len({r.site_id for r in labels}),
            "mean_weight": round(float(weights.mean()), 4) if len(weights) else None,
        },
        "options": _options_dict(options),
        "thresholds": {"candidate": asdict(cand_thresholds), "active": asdict(active.thresholds) if active else None},
        "sets": sets,
        "decision": "promote" if promote else "needs_review",
        "reasons": reasons,
        "training_seconds": manifest.get("training_seconds"),
    }

    step(5, "registering the candidate")
    manifest = {**manifest, "retrain": {"run_id": run_id, **_summary(report)}}
    version = models.register(kind, pipeline, manifest, status="candidate")
    report["candidate_version"] = version
    _update_run(run_id, candidate_version=version, active_version=report["active_version"])

    step(6, "promoting" if promote else "leaving the candidate for review")
    if promote:
        current = models.active(kind).version
        if current != report["active_version"]:  # an admin promoted something while we evaluated
            promote = False
            reasons.append(f"the active model changed during the run ({report['active_version']} -> {current})")
            report.update(decision="needs_review", reasons=reasons)
    if promote:
        models.promote(kind, version)
    else:
        models.set_status(kind, version, "needs_review", "; ".join(reasons)[:1000])
    report["timings"] = step.finish()
    _update_run(
        run_id,
        status="promoted" if promote else "needs_review",
        progress=f"{STEPS}/{STEPS} done",
        report=_jsonable(report),
        finished_at=_now(),
        running_slot=None,
    )


def _count(values: Iterator[str] | Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _options_dict(options: RetrainOptions) -> dict[str, Any]:
    d = asdict(options)
    d["source_weights"] = dict(options.source_weights)
    return d


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of the report: the decision, reasons, labels and every gate check."""
    return {
        "decision": report["decision"],
        "reasons": list(report["reasons"]),
        "compared_with": report["active_version"],
        "labels": report["labels"],
        "checks": [c for s in report["sets"] for c in s.get("checks", [])],
    }


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (numpy scalars and NaN do not survive every database's JSON column)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --- admin actions and the schedule ------------------------------------------------------------------------------


def promote_candidate(run_id: int, actor: str, models: ModelRegistry | None = None) -> str:
    """An admin promotes a run's candidate (e.g. one that needs review); returns the version."""
    models = models or registry()
    with session_scope() as db:
        run = db.get(RetrainRun, run_id)
        if run is None or not run.candidate_version:
            raise LookupError(f"retrain run {run_id} has no candidate")
        if run.status == "running":  # its own last step decides; its row must stay running until then
            raise LookupError(f"retrain run {run_id} is still running")
        models.promote(run.kind, run.candidate_version)
        run.status = "promoted"
        run.report = {**(run.report or {}), "promoted_by": actor, "promoted_at": _now().isoformat()}
        return run.candidate_version


def rollback(kind: str, models: ModelRegistry | None = None) -> str:
    """Re-activate the previous version of ``kind``; workers use it from their next decision."""
    return (models or registry()).rollback(kind)


def new_labels_since_last_run(session: Session, kind: str) -> int:
    """Labels that teach ``kind`` stored after the last completed run (promoted or needing review) collected its
    labels (all of them before any such run).

    Stored, by label id: not created after the run's creation, since a run queued behind another retrain trains on
    what arrived while it waited, and an imported label is dated by its comment, years back, yet new to the models.
    A failed run trained nothing that counts, and a queued or running one may still fail (and the schedule skips its
    kind anyway), so neither moves the mark. A run from before last_label_id existed counts from its creation.
    """
    last = session.execute(
        select(RetrainRun.last_label_id, RetrainRun.created_at)
        .where(RetrainRun.kind == kind, RetrainRun.status.in_(COMPLETED))
        .order_by(RetrainRun.id.desc())
        .limit(1)
    ).first()
    stmt = (
        select(func.count())
        .select_from(Label)
        .where(Label.superseded.is_(False), Label.label.in_(sorted(KIND_LABELS[kind])))
    )
    if last is not None:
        after = Label.created_at > last.created_at if last.last_label_id is None else Label.id > last.last_label_id
        stmt = stmt.where(after)
    return int(session.scalar(stmt) or 0)


def due_kinds(session: Session, min_new_labels: int | None = None) -> dict[str, int]:
    """Kinds due for the nightly retrain (at least N new labels, N = BOUNCER_RETRAIN_MIN_NEW_LABELS; 0 disables)."""
    n = settings().retrain_min_new_labels if min_new_labels is None else min_new_labels
    if n <= 0:
        return {}
    fail_interrupted_runs(session)
    due = {}
    for kind in KINDS:
        busy = session.scalar(
            select(RetrainRun.id).where(RetrainRun.kind == kind, RetrainRun.status.in_(("queued", "running")))
        )
        count = new_labels_since_last_run(session, kind)
        if busy is None and count >= n:
            due[kind] = count
    return due


def retrain_if_due(options: RetrainOptions | None = None, min_new_labels: int | None = None) -> dict[str, Any]:
    """The nightly check: retrain each due kind in turn (one after the other: one retrain at a time)."""
    with session_scope() as db:
        due = due_kinds(db, min_new_labels)
    outcome: dict[str, Any] = {}
    for kind, count in due.items():
        try:
            run_id = retrain(kind, "schedule", options=options)
        except RetrainBusy as exc:  # an admin's retrain is running: tonight's check skips this kind
            outcome[kind] = {"skipped": str(exc), "new_labels": count}
            continue
        outcome[kind] = {"run_id": run_id, "new_labels": count}
    return outcome
