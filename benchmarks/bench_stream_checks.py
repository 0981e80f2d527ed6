"""Added cost of the stream checks (campaign + velocity + first sight) per comment, against a real Redis.

    python benchmarks/bench_stream_checks.py [--redis-url redis://127.0.0.1:6379/8] [--comments 5000]

Without ``--redis-url`` it starts a private Redis for the run. With one, it writes to, and flushes before and after,
the stream database of that base (base + STREAM_DB, i.e. db 10 for the example): point it at a scratch Redis base,
never at production. The workload is real ham texts from the shared
data, mixed with a spun spam campaign and a one-IP flood, with simulated time advancing 0.2 s a comment.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.stack import percentile, private_redis  # noqa: E402 - after the path setup


def _percentiles(samples: list[float]) -> str:
    p50, p99, top = (percentile(samples, p) for p in (50, 99, 100))
    return f"p50 {p50 * 1000:.3f} ms  p99 {p99 * 1000:.3f} ms  max {top * 1000:.3f} ms  (n={len(samples)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", help="a scratch Redis base; default: a private Redis for the run")
    parser.add_argument("--comments", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "spam")
    args = parser.parse_args()
    if args.redis_url is None:
        with private_redis() as args.redis_url:
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    os.environ["BOUNCER_REDIS_URL"] = args.redis_url
    os.environ.setdefault("BOUNCER_SECRET_KEY", "benchmark-secret-of-the-stream-checks")
    os.environ.setdefault("BOUNCER_DATA_DIR", "/tmp/bouncer-bench")

    from service import redis_bus
    from service.config import settings
    from service.decisions import stream
    from service.decisions.stream_signatures import signature
    from service.models import Comment, Site

    settings.cache_clear()
    admin = redis_bus.client(redis_bus.STREAM_DB)
    admin.flushdb()

    texts: list[str] = []
    for name in ("youtube.csv", "sms.csv"):
        with open(args.data / name, newline="", encoding="utf-8") as fh:
            texts += [row["text"] for row in csv.DictReader(fh)]
    rng = random.Random(1)
    sites = [Site(id=n, name=f"s{n}", url=f"https://blog{n}.example.org", stream_settings={}) for n in range(1, 4)]
    spam = (
        "I made {n} dollars last week working from home with this {w} method, no experience needed. "
        "Visit http://earn{n}.example.biz/?r={n} to see how I did it and start earning today!"
    )

    def make(i: int) -> Comment:
        roll = rng.random()
        if roll < 0.1:
            content = spam.format(n=rng.randrange(100, 9999), w=rng.choice(["easy", "simple", "quick"]))
        else:
            content = rng.choice(texts)
        ip = "198.51.100.7" if roll > 0.97 else f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        c = Comment(
            content=content,
            author_ip=ip,
            author_email=f"user{rng.randrange(3000)}@mail.example",
            author_url=rng.choice(["", "", "https://someone.example/blog"]),
            post_url=f"https://blog.example.org/post-{rng.randrange(200)}",
        )
        c.id = i
        c.site = rng.choice(sites)
        c.site_id = c.site.id
        return c

    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    comments = [make(i) for i in range(args.comments + 500)]
    for i, c in enumerate(comments[:500]):  # warm-up: script load, connection, numpy
        stream.check_stream([c], t0 + timedelta(seconds=i * 0.2))

    sig_times, single = [], []
    for i, c in enumerate(comments[500:], start=500):
        started = time.perf_counter()
        signature(c.content, 8)
        sig_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = stream.check_stream([c], t0 + timedelta(seconds=i * 0.2))[0]
        single.append(time.perf_counter() - started)
        assert result.skipped is None, result.skipped
    print(f"Redis {args.redis_url} (stream db +{redis_bus.STREAM_DB}), {args.comments} comments")
    print(f"signature only (Python)      : {_percentiles(sig_times)}")
    print(f"check_stream, one comment    : {_percentiles(single)}")

    for size in (16, 64):
        per_batch, per_comment = [], []
        for start in range(0, args.comments - size + 1, size):
            batch = comments[500 + start : 500 + start + size]
            started = time.perf_counter()
            stream.check_stream(batch, t0 + timedelta(seconds=(args.comments + start) * 0.2))
            took = time.perf_counter() - started
            per_batch.append(took)
            per_comment.append(took / size)
        print(f"check_stream, batch of {size:<3}  : {_percentiles(per_batch)}")
        print(f"  per comment in the batch   : {_percentiles(per_comment)}")

    decided = comments[500:1500]
    for c in decided:
        c.decision, c.category = "reject", "spam"
    started = time.perf_counter()
    for start in range(0, len(decided), 64):
        stream.record_decisions(decided[start : start + 64])
    took = time.perf_counter() - started
    print(f"record_decisions             : {took / len(decided) * 1000:.3f} ms a comment (batches of 64)")
    admin.flushdb()


if __name__ == "__main__":
    main()
