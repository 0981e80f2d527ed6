"""Versioned models on disk, the active pointer per kind, and in-process hot swapping.

Layout: ``root/<kind>/<version>/{model.skops, manifest.json}`` and ``root/<kind>/active.json``
(``{"active": version, "history": [...], "statuses": {version: {...}}}``), always replaced atomically
(temp file + ``os.replace``) under an ``flock`` so that concurrent processes never see half a file.

An empty registry is seeded with the newest shipped starter model. When a newer Bouncer ships a newer starter, the
registry takes it in on first use: it becomes active if the active model is an untouched seeded starter (its
features and training may have changed with the code), and a candidate to compare and promote otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from classifiers.comment import KINDS, CommentInput, ModelScore, Thresholds
from classifiers.explain import Explainer, explain_batch
from classifiers.fast import FastScorer
from classifiers.features import FEATURES_VERSION, prepare_many
from classifiers.persistence import ARTIFACT, MANIFEST, ArtifactError, load_pipeline, save_pipeline

STATUSES = ("active", "candidate", "needs_review", "retired")
POINTER = "active.json"
STARTER_DIR = Path(__file__).resolve().parent / "starter_models"
STARTER_NOTE = "starter model"

log = logging.getLogger(__name__)


class NothingToRollBack(LookupError):
    """A kind has no earlier version to re-activate."""


class LoadedModel:
    """A fitted pipeline with its version, thresholds and manifest, ready to score."""

    def __init__(self, kind: str, version: str, pipeline: Pipeline, manifest: dict[str, Any]) -> None:
        self.kind = kind
        self.version = version
        self.pipeline = pipeline
        self.manifest = manifest
        self.thresholds = manifest_thresholds(manifest)
        self._prepare = pipeline.named_steps["prepare"]
        self._features = pipeline.named_steps["features"]
        self._clf = pipeline.named_steps["clf"]
        self._categories = [str(c) for c in self._clf.category_names_]
        # Pipelines of build_pipeline's shape score through FastScorer (same numbers, no sklearn overhead);
        # anything else falls back to the pipeline and the per-comment explainer.
        self._fast = FastScorer(pipeline) if FastScorer.supports(pipeline) else None
        self._explainer = Explainer(pipeline) if self._fast is None else None

    def predict_proba(self, comments: Sequence[CommentInput]) -> np.ndarray:
        """Calibrated positive-class probabilities, no explanations (the fast path for evaluation)."""
        if len(comments) == 0:
            return np.zeros(0)
        if self._fast is not None:
            return self._fast.predict_proba(prepare_many(comments))
        return np.asarray(self.pipeline.predict_proba(list(comments))[:, 1])

    def score(self, comments: Sequence[CommentInput]) -> list[ModelScore]:
        """Probabilities with reasons and (abuse) category probabilities, one per comment.

        Score batches (16-64 comments) rather than one comment at a time when you can: the per-call cost is
        shared. Preparation (normalisation, metadata) is cached per comment, so scoring the same inputs with
        the spam and then the abuse model prepares them once.
        """
        if len(comments) == 0:
            return []
        if self._fast is not None:
            return self._fast.score(prepare_many(comments))
        assert self._explainer is not None
        prepared = self._prepare.transform(comments)
        X = self._features.transform(prepared)
        p = self._clf.predict_proba(X)[:, 1]
        cats = self._clf.predict_categories(X)
        reasons = explain_batch(self._explainer, prepared, X)
        return [
            ModelScore(
                probability=float(p[i]),
                reasons=reasons[i],
                categories={name: round(float(cats[i, j]), 4) for j, name in enumerate(self._categories)},
            )
            for i in range(len(prepared))
        ]

    def __repr__(self) -> str:
        return f"LoadedModel(kind={self.kind!r}, version={self.version!r}, thresholds={self.thresholds})"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    version: str
    created_at: str
    status: str
    metrics: dict[str, Any]
    thresholds: Thresholds
    manifest: dict[str, Any]

    @property
    def features_version(self) -> int:
        return trained_features_version(self.manifest)

    @property
    def needs_retraining(self) -> bool:
        """Trained under other feature code: it no longer reads comments as it did when it was measured."""
        return self.features_version != FEATURES_VERSION


def read_manifest(path: Path) -> dict[str, Any]:
    """A version's manifest; an unreadable one is an ``ArtifactError`` naming the file."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        raise ArtifactError(f"{path / MANIFEST}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path / MANIFEST}: unreadable manifest (not a JSON object)")
    try:
        # the numbers every reader relies on (list, load, promote, rollback) are checked once, here
        manifest_thresholds(manifest)
        trained_features_version(manifest)
    except ValueError as exc:
        raise ArtifactError(f"{path / MANIFEST}: unreadable manifest ({exc})") from exc
    return manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_version_dir(kind: str, path: Path) -> LoadedModel:
    """Load one version directory: the artifact must match the digest its manifest recorded, then load safely."""
    manifest = read_manifest(path)
    if not (path / ARTIFACT).is_file():
        raise ArtifactError(f"{path}: has no {ARTIFACT}; not loaded")
    expected = manifest.get("artifact_sha256")
    if expected is not None and file_sha256(path / ARTIFACT) != expected:
        raise ArtifactError(
            f"{path / ARTIFACT}: does not match the artifact_sha256 of its manifest (corrupt or replaced); not loaded"
        )
    pipeline = load_pipeline(path / ARTIFACT)
    try:
        return LoadedModel(kind, path.name, pipeline, manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path}: not a Bouncer model ({type(exc).__name__}: {exc})") from exc


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the pointer must stay readable by the web and worker processes,
        # which may run as other users, like the version directories (0755) and manifests beside it
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def manifest_thresholds(manifest: dict[str, Any]) -> Thresholds:
    """The operating point a manifest records; ``ValueError`` unless it holds two finite numbers."""
    t: Any = manifest.get("thresholds")
    try:
        thresholds = Thresholds(approve_below=float(t["approve_below"]), reject_at=float(t["reject_at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"thresholds {t!r} are not two numbers") from exc
    if not (math.isfinite(thresholds.approve_below) and math.isfinite(thresholds.reject_at)):
        raise ValueError(f"thresholds {t!r} are not two finite numbers")
    return thresholds


def trained_features_version(manifest: dict[str, Any]) -> int:
    """The ``features.FEATURES_VERSION`` a model was trained under (1: trained before versions were recorded)."""
    value = manifest.get("features_version", 1)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"features_version {value!r} is not a number") from exc


def newest_starter(kind: str) -> Path | None:
    """The newest shipped starter version directory of ``kind`` (one with a manifest), if any."""
    starters = sorted(p for p in (STARTER_DIR / kind).glob("*") if (p / MANIFEST).is_file())
    return starters[-1] if starters else None


def _copy_version(src: Path, kind_dir: Path) -> None:
    """Copy a version directory into ``kind_dir`` atomically (a half-copied version is never visible)."""
    tmp = Path(tempfile.mkdtemp(dir=kind_dir, prefix=".seed-"))
    tmp.chmod(0o755)  # mkdtemp is private; the web and worker processes may run as other users
    shutil.copy2(src / ARTIFACT, tmp / ARTIFACT)
    shutil.copy2(src / MANIFEST, tmp / MANIFEST)
    os.replace(tmp, kind_dir / src.name)


class ModelRegistry:
    """Model versions under ``root``; ``active(kind)`` is cached and follows promotions by any process."""

    def __init__(self, root: Path | str, seed_starter: bool = True) -> None:
        self.root = Path(root)
        self.seed_starter = seed_starter
        self._lock = threading.RLock()
        self._active: dict[str, tuple[tuple[int, int, int], LoadedModel]] = {}
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._starter_checked: set[str] = set()  # kinds whose shipped starter this process has taken in

    # ---- paths and locking -------------------------------------------------------------------------
    def _kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        return self.root / kind

    @contextlib.contextmanager
    def _locked(self, kind: str) -> Iterator[Path]:
        """Exclusive lock for read-modify-write of one kind's pointer, across threads and processes."""
        kind_dir = self._kind_dir(kind)
        kind_dir.mkdir(parents=True, exist_ok=True)
        with self._lock, open(kind_dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield kind_dir
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_pointer(self, kind: str) -> dict[str, Any]:
        path = self._kind_dir(kind) / POINTER
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = {}
        except ValueError as exc:
            raise ArtifactError(f"{path}: unreadable registry pointer ({exc}); restore it or remove it") from exc
        if not isinstance(state, dict):
            raise ArtifactError(f"{path}: unreadable registry pointer (not a JSON object); restore it or remove it")
        state.setdefault("active", None)
        state.setdefault("history", [])
        state.setdefault("statuses", {})
        return state

    def _write_pointer(self, kind: str, state: dict[str, Any]) -> None:
        state["updated_at"] = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        _write_json_atomic(self._kind_dir(kind) / POINTER, state)

    def _version_dirs(self, kind: str) -> list[Path]:
        kind_dir = self._kind_dir(kind)
        if not kind_dir.is_dir():
            return []
        return [p for p in kind_dir.iterdir() if p.is_dir() and (p / MANIFEST).is_file() and (p / ARTIFACT).is_file()]

    def _ensure_seeded(self, kind: str) -> None:
        if not self.seed_starter:
            return
        if self._version_dirs(kind) and (self._kind_dir(kind) / POINTER).is_file():
            if kind not in self._starter_checked:
                self._take_in_shipped_starter(kind)
            return
        # Either nothing is seeded yet or another thread/process is seeding right now (its version directory
        # appears before its pointer): wait for the lock, under which the seeder finishes both.
        with self._locked(kind) as kind_dir:
            if self._version_dirs(kind):
                return  # another process seeded it while we waited for the lock
            src = newest_starter(kind)
            if src is None:
                return
            _copy_version(src, kind_dir)
            state = self._read_pointer(kind)
            state["active"] = src.name
            state["statuses"][src.name] = {"status": "active", "note": STARTER_NOTE, "at": _now().isoformat()}
            self._write_pointer(kind, state)
            self._starter_checked.add(kind)

    def _take_in_shipped_starter(self, kind: str) -> None:
        """After an upgrade: the newest shipped starter replaces an untouched seeded starter, else is a candidate.

        A seeded starter is "untouched" while its note is the seeding note: nobody promoted, rolled back or
        retrained since. An admin's choice (a trained or promoted model) is never replaced, only offered the new
        starter to compare with (``bouncer models list``, the models page).
        """
        src = newest_starter(kind)
        if src is None or (self._kind_dir(kind) / src.name).exists():
            # Nothing to take in: no lock. Serving processes (web, workers) only read the registry and may run as
            # users who cannot write its .lock file, or mount a shared models volume read-only.
            self._starter_checked.add(kind)
            return
        with self._locked(kind) as kind_dir:
            self._starter_checked.add(kind)
            if (kind_dir / src.name).exists():
                return
            _copy_version(src, kind_dir)
            state = self._read_pointer(kind)
            active, at = state["active"], _now().isoformat()
            if active and state["statuses"].get(active, {}).get("note") == STARTER_NOTE:
                state["history"].append(active)
                replaced = f"replaced by the shipped {src.name}"
                state["statuses"][active] = {"status": "retired", "note": replaced, "at": at}
                state["active"] = src.name
                state["statuses"][src.name] = {"status": "active", "note": STARTER_NOTE, "at": at}
            else:
                note = "starter model shipped with this Bouncer version: compare, then promote or keep"
                state["statuses"][src.name] = {"status": "candidate", "note": note, "at": at}
            self._write_pointer(kind, state)

    def _version_path(self, kind: str, version: str) -> Path:
        """The directory of ``version``; a name or symlink that leads out of the kind's directory is no version."""
        kind_dir = self._kind_dir(kind)
        path = kind_dir / str(version)
        if (
            not isinstance(version, str)
            or not version
            or "/" in version
            or "\\" in version
            or version.startswith(".")
            or not (path / MANIFEST).is_file()
        ):
            raise KeyError(f"no {kind} model version {version!r} in {self.root}")
        if path.resolve().parent != kind_dir.resolve():
            raise ArtifactError(f"{path}: leads outside the registry ({path.resolve()}); not loaded")
        return path

    # ---- reading -----------------------------------------------------------------------------------
    def load(self, kind: str, version: str) -> LoadedModel:
        """Load (and cache) one version."""
        self._ensure_seeded(kind)
        key = (kind, version)
        with self._lock:
            if key not in self._loaded:
                path = self._version_path(kind, version)
                self._loaded[key] = load_version_dir(kind, path)
            return self._loaded[key]

    def active(self, kind: str) -> LoadedModel:
        """The active model; a ``stat`` of the pointer notices promotions by other processes."""
        if kind not in self._starter_checked:
            self._ensure_seeded(kind)  # first use in this process: seed, or take in a newer shipped starter
        pointer = self._kind_dir(kind) / POINTER
        try:
            st = pointer.stat()
        except FileNotFoundError:
            self._ensure_seeded(kind)
            try:
                st = pointer.stat()
            except FileNotFoundError:
                raise LookupError(f"no active {kind} model in {self.root}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._active.get(kind)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with self._lock:
            state = self._read_pointer(kind)
            if not state["active"]:
                raise LookupError(f"no active {kind} model in {self.root}")
            model = self.load(kind, state["active"])
            trained = trained_features_version(model.manifest)
            if trained != FEATURES_VERSION:
                log.warning(
                    "active %s model %s was trained under features version %s, this code reads comments as version "
                    "%s: its scores are not the ones it was measured with; retrain it or promote the shipped starter",
                    kind,
                    model.version,
                    trained,
                    FEATURES_VERSION,
                )
            self._active[kind] = (stamp, model)
            return model

    def versions(self, kind: str) -> list[ModelInfo]:
        """All versions, newest first."""
        self._ensure_seeded(kind)
        state = self._read_pointer(kind)
        infos = []
        for path in self._version_dirs(kind):
            try:
                manifest = read_manifest(path)
            except ArtifactError as exc:
                log.warning("%s model %s is not listed: %s", kind, path.name, exc)
                continue
            status = "active" if path.name == state["active"] else None
            status = status or state["statuses"].get(path.name, {}).get("status", "candidate")
            if status == "active" and path.name != state["active"]:
                status = "retired"
            infos.append(
                ModelInfo(
                    version=path.name,
                    created_at=str(manifest.get("created_at", "")),
                    status=status,
                    metrics=manifest.get("metrics", {}),
                    thresholds=manifest_thresholds(manifest),
                    manifest=manifest,
                )
            )
        return sorted(infos, key=lambda i: (i.created_at, i.version), reverse=True)

    # ---- writing -----------------------------------------------------------------------------------
    def register(self, kind: str, pipeline: Pipeline, manifest: dict[str, Any], status: str = "candidate") -> str:
        """Save a fitted pipeline as a new version; returns its id (``<kind>-<UTC time>-<hash>``)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        self._ensure_seeded(kind)
        kind_dir = self._kind_dir(kind)
        kind_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=kind_dir, prefix=".register-"))
        tmp.chmod(0o755)  # mkdtemp is private; the web and worker processes may run as other users
        try:
            save_pipeline(pipeline, tmp / ARTIFACT)
            digest = file_sha256(tmp / ARTIFACT)
            version = f"{kind}-{_now().strftime('%Y%m%dT%H%M%SZ')}-{digest[:8]}"
            manifest = {**manifest, "version": version, "kind": kind, "artifact_sha256": digest}
            manifest.setdefault("created_at", _now().strftime("%Y-%m-%dT%H:%M:%SZ"))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
            load_pipeline(tmp / ARTIFACT)  # refuse to register what cannot be loaded back safely
            with self._locked(kind):
                if (kind_dir / version).exists():
                    raise FileExistsError(f"version {version} already exists")
                os.replace(tmp, kind_dir / version)
                state = self._read_pointer(kind)
                state["statuses"][version] = {"status": "candidate", "note": "", "at": _now().isoformat()}
                self._write_pointer(kind, state)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if status == "active":
            self.promote(kind, version)
        elif status != "candidate":
            self.set_status(kind, version, status)
        return version

    def promote(self, kind: str, version: str) -> None:
        """Make ``version`` the active model; the previous one goes to the history (for rollback)."""
        self.load(kind, version)  # must load cleanly before it can serve
        with self._locked(kind):
            state = self._read_pointer(kind)
            previous = state["active"]
            if previous == version:
                return
            at = _now().isoformat()
            if previous:
                state["history"].append(previous)
                state["statuses"][previous] = {"status": "retired", "note": f"replaced by {version}", "at": at}
            state["active"] = version
            state["statuses"][version] = {"status": "active", "note": "promoted", "at": at}
            self._write_pointer(kind, state)

    def _rollback_index(self, kind: str, state: dict[str, Any]) -> int | None:
        """Where in the history the version a rollback would re-activate is: the latest earlier one still there."""
        kind_dir = self._kind_dir(kind)
        for i in range(len(state["history"]) - 1, -1, -1):
            previous = state["history"][i]
            if previous != state["active"] and (kind_dir / previous / ARTIFACT).is_file():
                return i
        return None

    def rollback_target(self, kind: str) -> str | None:
        """The version ``rollback`` would re-activate, or None when there is nothing to roll back to."""
        self._ensure_seeded(kind)
        state = self._read_pointer(kind)
        i = self._rollback_index(kind, state)
        return None if i is None else str(state["history"][i])

    def rollback(self, kind: str) -> str:
        """Re-activate the previously active version and return it; the current one needs review."""
        self._ensure_seeded(kind)
        with self._locked(kind):
            state = self._read_pointer(kind)
            current = state["active"]
            i = self._rollback_index(kind, state)
            if i is None:
                raise NothingToRollBack(f"no earlier {kind} model to roll back to")
            previous = state["history"][i]
            del state["history"][i:]  # it, and the entries after it that could not be re-activated
            # it must load cleanly before it serves (as promote checks): a corrupt one leaves the pointer alone
            loaded = load_version_dir(kind, self._version_path(kind, previous))
            at = _now().isoformat()
            if current:
                state["statuses"][current] = {"status": "needs_review", "note": "rolled back", "at": at}
            state["active"] = previous
            state["statuses"][previous] = {"status": "active", "note": f"rollback from {current}", "at": at}
            self._write_pointer(kind, state)
            with self._lock:
                self._loaded.setdefault((kind, previous), loaded)
        return str(previous)

    def set_status(self, kind: str, version: str, status: str, note: str = "") -> None:
        """Mark a non-active version ``candidate``, ``needs_review`` or ``retired`` (``active`` promotes)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        if status == "active":
            self.promote(kind, version)
            return
        with self._locked(kind) as kind_dir:
            if not (kind_dir / version / MANIFEST).is_file():
                raise KeyError(f"no {kind} model version {version!r}")
            state = self._read_pointer(kind)
            if state["active"] == version:
                raise ValueError(f"{version} is active: promote another version or roll back first")
            state["statuses"][version] = {"status": status, "note": note, "at": _now().isoformat()}
            self._write_pointer(kind, state)
