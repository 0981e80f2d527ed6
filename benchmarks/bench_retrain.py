"""Time one retrain of a model on all its shared training-allowed data plus N human labels (default 10,000).

Runs the real ``service.retraining.retrain``: labels read from a fresh database, the candidate trained, candidate and
active (starter) model evaluated on the frozen sets, the gate, registration; prints wall and CPU time and the peak
memory of the process. Needs no Redis: one retrain at a time is kept by the database.

    python benchmarks/bench_retrain.py [--kind spam|abuse] [--labels 10000]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.retraining.campaign import campaign_comment, ham_comment  # noqa: E402  # after the path is set

_INSULTS = ["idiot", "moron", "clown", "loser", "troll", "halfwit", "hack", "fraud", "joke"]
_INSULT_FRAMES = [
    "You are a complete {x}, {name}.",
    "Only a {x} would write this garbage.",
    "Shut up, you pathetic {x}.",
    "{name}, nobody cares what a {x} like you thinks.",
    "What a {x}. Get lost.",
]


def _abuse_comment(rng: random.Random) -> str:
    name = rng.choice(["Dave", "author", "mate", "pal", "genius"])
    return rng.choice(_INSULT_FRAMES).format(x=rng.choice(_INSULTS), name=name)


def _insert_labels(n: int, seed: int, kind: str) -> None:
    """``n`` labelled comments over the last 60 days: a third positives (spam of the campaign, or insults for
    abuse), the rest ordinary comments."""
    from service.db import session_scope
    from service.models import Comment, Label
    from service.sites import create_site

    rng = random.Random(seed)
    now = datetime.now(UTC)
    with session_scope() as db:
        site, _keys = create_site(db, "bench", "https://bench.example", None)
        site_id = site.id
    batch = 1000
    for start in range(0, n, batch):
        with session_scope() as db:
            rows = []
            for i in range(start, min(n, start + batch)):
                positive = rng.random() < 1 / 3
                if positive:
                    text = campaign_comment(rng) if kind == "spam" else _abuse_comment(rng)
                else:
                    text = ham_comment(rng)
                # A tail of its own, so that every label is a distinct text (training drops repeats).
                text = f"{text} {rng.choice(['Cheers', 'Thanks', 'Best', 'Regards', '--'])} #{i}"
                when = now - timedelta(days=60 * (n - i) / n)
                c = Comment(site_id=site_id, content=text, status="decided", decision="hold", received_at=when)
                rows.append((c, kind if positive else "ham", when))
            db.add_all([c for c, _, _ in rows])
            db.flush()
            db.add_all(
                [
                    Label(comment_id=c.id, site_id=site_id, label=label, source="moderator", created_at=when)
                    for c, label, when in rows
                ]
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("spam", "abuse"), default="spam")
    parser.add_argument("--labels", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bouncer-bench-retrain-"))
    os.environ.update(
        {
            "BOUNCER_DATA_DIR": str(data_dir),
            "BOUNCER_DATABASE_URL": args.database_url or f"sqlite:///{data_dir / 'bench.db'}",
            "BOUNCER_LOG_LEVEL": "WARNING",
        }
    )
    from service import retraining
    from service.config import settings
    from service.migrate import upgrade
    from service.models import RetrainRun

    upgrade()
    started = time.perf_counter()
    _insert_labels(args.labels, seed=1, kind=args.kind)
    print(f"inserted {args.labels} labelled comments in {time.perf_counter() - started:.1f} s")
    allowed, _ = retraining.base_files(args.kind)
    print(f"base data: {', '.join(p.name for p in allowed)} from {settings().shared_data_dir}")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")

    started, cpu = time.perf_counter(), time.process_time()
    run_id = retraining.retrain(args.kind, "benchmark")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu

    from service.db import session_scope

    with session_scope() as db:
        run = db.get(RetrainRun, run_id)
        assert run is not None
        report, status, error = run.report, run.status, run.error
    if status == "failed":
        raise SystemExit(f"the retrain failed: {error}")
    print(
        f"run #{run_id}: {status}; labels {report['labels']['train']} trained, {report['labels']['holdout']} held out"
    )
    for step, s in report["timings"].items():
        print(f"  {step:<70} {s:7.1f} s")
    load = os.getloadavg()[0]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"retrain {args.kind}: all shared training data + {args.labels} labels: {seconds:.1f} s wall, {cpu:.1f} s CPU, "
        f"peak RSS {peak_mb:.0f} MB (spam limit 120 s; load average {load:.1f} on {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
