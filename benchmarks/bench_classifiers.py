"""Classifier benchmark: latency, throughput, load time, training time, peak memory (one core).

    taskset -c 1 python benchmarks/bench_classifiers.py [--data-dir ../shared/data] [--skip-training] [--repeat 3]

Scores the shipped starter models on real comments from the shared test splits (youtube + sms + jigsaw,
4,000 comments). Every timed pass starts with an empty prepared-comment cache (each comment is normalised
again); the per-word hash cache is warm after the first pass, as in a running service. With ``--repeat N``
each figure is measured N times and reported as ``median`` with ``[min, max]`` (the machine may be shared).
"""

from __future__ import annotations

import os

# One core: pin BLAS threads before numpy loads, and the process to one CPU.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - after the thread pinning above
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stack import percentile  # noqa: E402
from classifiers import CommentInput, Dataset, LoadedModel, load_csv, train_model  # noqa: E402
from classifiers.base_data import BASE_TRAINING, load_base_training  # noqa: E402
from classifiers.features import _prepare_cached  # noqa: E402
from classifiers.registry import load_version_dir, newest_starter  # noqa: E402

BATCH = 32  # the service scores batches of 16-64 comments


def _starter(kind: str) -> Path:
    path = newest_starter(kind)
    if path is None:
        raise SystemExit(f"no shipped {kind} starter")
    return path


def _rate(fn: Callable[[list[CommentInput]], object], comments: list[CommentInput], batch: int) -> float:
    """Comments per second through ``fn`` in batches of ``batch``, prepared-comment cache cleared first."""
    _prepare_cached.cache_clear()
    t0 = time.perf_counter()
    for i in range(0, len(comments), batch):
        fn(comments[i : i + batch])
    return len(comments) / (time.perf_counter() - t0)


def _latencies_ms(model: LoadedModel, comments: list[CommentInput]) -> list[float]:
    _prepare_cached.cache_clear()
    lat = []
    for c in comments:
        t0 = time.perf_counter()
        model.score([c])
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


def _summary(values: list[float], digits: int = 0) -> object:
    if len(values) == 1:
        return round(values[0], digits) if digits else round(values[0])
    med, lo, hi = (float(np.median(values)), min(values), max(values))
    r = (lambda v: round(v, digits)) if digits else (lambda v: round(v))
    return {"median": r(med), "range": [r(lo), r(hi)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="Measure each figure N times; report median [min, max].")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    out: dict[str, object] = {"cpu_count_used": 1, "repeat": args.repeat, "batch": BATCH}

    comments = Dataset.concat(
        [load_csv(args.data_dir / "spam" / f, "test") for f in ("youtube.csv", "sms.csv")]
        + [load_csv(args.data_dir / "abuse" / "jigsaw.csv", "test")]
    ).comments[:4000]
    out["comments"] = len(comments)
    out["mean_comment_chars"] = round(float(np.mean([len(c.text) for c in comments])))
    models: dict[str, LoadedModel] = {}
    for kind in ("spam", "abuse"):
        path = _starter(kind)
        start = time.perf_counter()
        model = load_version_dir(kind, path)
        load_s = time.perf_counter() - start
        models[kind] = model
        model.score(comments)  # warm-up: fills the per-word hash cache once
        p50, p99, proba, proba_all, score = [], [], [], [], []
        for _ in range(args.repeat):
            ms = _latencies_ms(model, comments[:2000])
            p50.append(percentile(ms, 50))
            p99.append(percentile(ms, 99))
            proba.append(_rate(model.predict_proba, comments, BATCH))
            proba_all.append(_rate(model.predict_proba, comments, len(comments)))
            score.append(_rate(model.score, comments, BATCH))
        out[kind] = {
            "version": model.version,
            "artifact_mb": round((path / "model.skops").stat().st_size / 2**20, 2),
            "load_s": round(load_s, 3),
            "single_score_ms_p50": _summary(p50, 3),
            "single_score_ms_p99": _summary(p99, 3),
            f"predict_proba_per_s_batch{BATCH}": _summary(proba),
            "predict_proba_per_s_one_batch": _summary(proba_all),
            f"score_with_reasons_per_s_batch{BATCH}": _summary(score),
        }

    # What the service does: every comment scored with reasons by both models (preparation shared).
    def both(batch: list[CommentInput]) -> None:
        for model in models.values():
            model.score(batch)

    rates = [_rate(both, comments, BATCH) for _ in range(args.repeat)]
    out[f"both_models_with_reasons_per_s_batch{BATCH}"] = _summary(rates)
    out[f"both_models_with_reasons_us_per_comment_batch{BATCH}"] = _summary([1e6 / r for r in rates])

    if not args.skip_training:
        # All the shared spam training data (spam/*), then the shipped recipe (plus the discussion negatives).
        spam_only = [load_csv(args.data_dir / f.path) for f in BASE_TRAINING["spam"] if f.path.startswith("spam/")]
        for name, datasets in (("all", spam_only), ("recipe", load_base_training("spam", args.data_dir))):
            t0 = time.perf_counter()
            _, manifest = train_model("spam", datasets, evaluate_on=())
            out[f"train_spam_{name}_s"] = round(time.perf_counter() - t0, 1)
            out[f"train_spam_{name}_rows"] = manifest["rows"]["train"]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
