"""Classifier benchmark: latency, throughput, load time, training time, peak memory (one core).

    python benchmarks/bench_classifiers.py [--data-dir ../shared/data] [--skip-training]

Scores the shipped starter models on real comments from the shared test splits.
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifiers import Dataset, load_csv, train_model  # noqa: E402
from classifiers.registry import STARTER_DIR, load_version_dir  # noqa: E402
from classifiers.starter import TRAIN_FILES  # noqa: E402


def _starter(kind: str) -> Path:
    return sorted(p for p in (STARTER_DIR / kind).iterdir() if p.is_dir())[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    out: dict[str, object] = {"cpu_count_used": 1}

    comments = Dataset.concat(
        [load_csv(args.data_dir / "spam" / f, "test") for f in ("youtube.csv", "sms.csv")]
        + [load_csv(args.data_dir / "abuse" / "jigsaw.csv", "test")]
    ).comments
    for kind in ("spam", "abuse"):
        path = _starter(kind)
        start = time.perf_counter()
        model = load_version_dir(kind, path)
        load_s = time.perf_counter() - start
        model.score(comments[:50])  # warm-up
        lat = []
        for c in comments[:2000]:
            t0 = time.perf_counter()
            model.score([c])
            lat.append(time.perf_counter() - t0)
        ms = np.asarray(lat) * 1000
        batch = comments[:4000]
        t0 = time.perf_counter()
        model.predict_proba(batch)
        proba_rate = len(batch) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.score(batch)
        score_rate = len(batch) / (time.perf_counter() - t0)
        out[kind] = {
            "version": model.version,
            "artifact_mb": round((path / "model.skops").stat().st_size / 2**20, 2),
            "load_s": round(load_s, 3),
            "single_score_ms_p50": round(float(np.percentile(ms, 50)), 2),
            "single_score_ms_p99": round(float(np.percentile(ms, 99)), 2),
            "batch_predict_proba_per_s": round(proba_rate),
            "batch_score_with_reasons_per_s": round(score_rate),
            "mean_comment_chars": round(float(np.mean([len(c.text) for c in comments[:4000]]))),
        }
    if not args.skip_training:
        datasets = [load_csv(args.data_dir / f) for f in TRAIN_FILES["spam"]]
        t0 = time.perf_counter()
        _, manifest = train_model("spam", datasets, evaluate_on=())
        out["train_spam_all_s"] = round(time.perf_counter() - t0, 1)
        out["train_spam_rows"] = manifest["rows"]["train"]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
