"""Retraining from human labels, with an evaluation gate: a bad model never reaches production by itself.

``retrain(kind)`` trains a candidate with the same pipeline code (``classifiers.train_model``) on the
training-allowed base data plus the sites' human labels, evaluates candidate and active model on the same frozen
data (the base files' ``test`` split and the newest site labels, which training never sees), writes a report to
the ``RetrainRun`` and the candidate's manifest, and promotes the candidate only when it is better on the site
holdout and not worse than a tolerance on every frozen set; otherwise the candidate waits for an admin
(``needs_review``) with the reasons. One retrain runs at a time (a Redis lock); a failure leaves the active model
untouched and is stored on the run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from classifiers import KINDS, CommentInput, Dataset, LoadedModel, ModelRegistry, Thresholds, evaluate, load_csv
from classifiers.base_data import BASE_TRAINING, load_base_training
from classifiers.data import SOURCES
from classifiers.normalize import normalize_text
from classifiers.training import train_model
from service import redis_bus
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

LOCK_KEY = "bouncer:retrain:lock"
LOCK_TTL_SECONDS = 30 * 60  # refreshed at every step; a dead worker's lock expires on its own
STALE_QUEUED_SECONDS = 6 * 3600
INTERRUPTED = "interrupted: the worker stopped during the run"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) else return 0 end"
)

Trainer = Callable[..., tuple[Any, dict[str, Any]]]  # classifiers.train_model's signature


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock (or is queued): try again later."""


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


# --- runs, progress and the lock ---------------------------------------------------------------------------------


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


def fail_interrupted_runs(db: Session) -> None:
    """End as failed the runs left ``running`` by a worker that died (a live run always holds the retrain lock).

    The dead worker's lock outlives it (up to its TTL) and its redelivered task may come back before that, so
    without this such a run stayed ``running`` for good and every later retrain of its kind was refused as busy.
    """
    running = list(db.scalars(select(RetrainRun.id).where(RetrainRun.status == "running")))
    # Ids read before the lock check: a run that starts meanwhile holds the lock first and is not among them.
    if running and lock_holder() is None:
        db.execute(
            update(RetrainRun)
            .where(RetrainRun.id.in_(running), RetrainRun.status == "running")
            .values(status="failed", error=INTERRUPTED, finished_at=_now())
        )


def _update_run(run_id: int, **values: Any) -> None:
    with session_scope() as db:
        db.execute(update(RetrainRun).where(RetrainRun.id == run_id).values(**values))


def mark_failed(run_id: int, error: str) -> None:
    """The run ends as failed with a visible error; nothing about the active model changes."""
    _update_run(run_id, status="failed", error=error[:4000], finished_at=_now())


class _Lock:
    """``SET key token NX EX ttl``: one retrain at a time across every worker; released only by its holder."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self.redis = redis_bus.client(redis_bus.NOTIFY_DB)

    def acquire(self) -> bool:
        return bool(self.redis.set(LOCK_KEY, self.token, nx=True, ex=LOCK_TTL_SECONDS))

    def extend(self) -> None:
        self.redis.eval(_EXTEND, 1, LOCK_KEY, self.token, str(LOCK_TTL_SECONDS))

    def release(self) -> None:
        try:
            self.redis.eval(_RELEASE, 1, LOCK_KEY, self.token)
        except Exception:  # Redis gone: the TTL frees the lock
            log.warning("could not release the retrain lock", exc_info=True)


def lock_holder() -> str | None:
    """The token of the running retrain, or None when no retrain holds the lock."""
    raw = redis_bus.client(redis_bus.NOTIFY_DB).get(LOCK_KEY)
    return raw.decode() if isinstance(raw, bytes) else None if raw is None else str(raw)


@contextmanager
def retrain_lock() -> Iterator[_Lock]:
    """Hold the retrain lock for the block; ``RetrainBusy`` when another retrain holds it."""
    lock = _Lock()
    if not lock.acquire():
        raise RetrainBusy("another retrain is running")
    try:
        yield lock
    finally:
        lock.release()


class _Progress:
    """Writes ``k/n what`` to the run (the UI polls it), keeps the lock alive and times each step."""

    def __init__(self, run_id: int, lock: _Lock) -> None:
        self.run_id = run_id
        self.lock = lock
        self.started = self.last = time.perf_counter()
        self.step = ""
        self.timings: dict[str, float] = {}

    def __call__(self, number: int, text: str) -> None:
        self._close()
        self.step = text
        self.lock.extend()
        _update_run(self.run_id, progress=f"{number}/{STEPS} {text}"[:200])

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

    ``RetrainBusy`` when another retrain holds the lock (the run stays queued, for a later try). Any other
    failure ends the run as ``failed`` with the error; the active model is changed only by the final promotion.
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
    lock = _Lock()
    if not lock.acquire():
        if own_run:  # nobody will retry a run made here: end it visibly
            mark_failed(run_id, "another retrain was running")
        raise RetrainBusy("another retrain is running")
    try:
        with session_scope() as db:
            # We hold the lock, so any other "running" run lost its worker.
            db.execute(
                update(RetrainRun)
                .where(RetrainRun.status == "running", RetrainRun.id != run_id)
                .values(status="failed", error=INTERRUPTED, finished_at=_now())
            )
            started = db.execute(
                update(RetrainRun)
                .where(RetrainRun.id == run_id, RetrainRun.status == "queued")
                .values(status="running", progress=f"0/{STEPS} starting")
            )
            if started.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult has rowcount
                return run_id
        try:
            _run(run_id, kind, options, trainer, models or registry(), _Progress(run_id, lock))
        except Exception as exc:  # any failure: visible on the run, the active model untouched
            log.exception("retrain run %s (%s) failed", run_id, kind)
            mark_failed(run_id, f"{type(exc).__name__}: {exc}")
    finally:
        lock.release()
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
