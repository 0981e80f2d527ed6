"""Load benchmark of the Akismet-compatible API: comment-check latency at N concurrent clients.

Each client is one keep-alive connection sending Akismet comment-check forms back to back (real comments from the
shared data, spam and ham), as blogs do. Prints p50/p95/p99/max latency, throughput, the answers, errors (anything
but HTTP 200 with ``true``/``false``, including timeouts) and how many answers took longer than the PyPI client's
1 s timeout. Against a running server:

    python benchmarks/bench_akismet.py --url http://127.0.0.1:8000 --key AKISMETKEY12 --clients 50 --duration 30

or let it start gunicorn + a Celery worker on a temp SQLite database and a private Redis:

    python benchmarks/bench_akismet.py --start --clients 50 --duration 30

Exit status 1 when there were errors or p99 reached the target (default 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.stack import local_stack, percentile  # noqa: E402 - after the path setup


def comment_rows(limit: int = 2000) -> list[dict[str, str]]:
    """Real comments (about half spam) from the shared data set."""
    path = REPO.parent / "shared" / "data" / "spam" / "youtube.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        return list(itertools.islice(csv.DictReader(fh), limit))


def akismet_form(key: str, row: dict[str, str], n: int) -> dict[str, str]:
    return {
        "api_key": key,
        "blog": "https://bench.example",
        "user_ip": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",  # one visitor per comment
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        "referrer": "https://bench.example/post/1",
        "permalink": "https://bench.example/post/1",
        "comment_type": "comment",
        "comment_author": row.get("author") or f"reader {n % 97}",
        "comment_author_email": f"reader{n}@mail.example",
        "comment_content": row["text"],
        "blog_lang": "en",
        "blog_charset": "UTF-8",
    }


async def client_loop(
    url: str, key: str, rows: list[dict[str, str]], start: int, stop_at: float, timeout: float,
    latencies: list[float], answers: Counter[str], errors: Counter[str],
) -> None:  # fmt: skip
    """One blog's keep-alive connection sending comment-checks back to back."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        for n in itertools.count(start, 1000):
            if time.monotonic() >= stop_at:
                return
            form = akismet_form(key, rows[n % len(rows)], n)
            t0 = time.perf_counter()
            try:
                response = await client.post("/1.1/comment-check", data=form)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200 or response.text not in ("true", "false"):
                help_text = response.headers.get("X-akismet-debug-help", "")
                errors[f"HTTP {response.status_code} {response.text[:40]!r} {help_text}".strip()] += 1
                continue
            discard = response.headers.get("X-akismet-pro-tip") == "discard"
            answers["discard" if discard else ("spam" if response.text == "true" else "ham")] += 1


async def run(url: str, key: str, clients: int, duration: float, timeout: float) -> dict[str, Any]:
    rows = comment_rows()
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    started = time.monotonic()
    stop_at = started + duration
    await asyncio.gather(
        *(client_loop(url, key, rows, i, stop_at, timeout, latencies, answers, errors) for i in range(clients))
    )
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "requests": len(latencies) + sum(errors.values()),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            name: round(percentile(ordered, p) * 1000, 1) for name, p in (("p50", 50), ("p95", 95), ("p99", 99))
        }
        | {"max": round((ordered[-1] if ordered else float("nan")) * 1000, 1)},
        "over_1s": sum(1 for v in ordered if v >= 1.0),
        "answers": dict(answers),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


def decided_by(database_url: str) -> dict[str, int]:
    """Who decided the benchmark's comments: the worker within the budget, or the web fallback."""
    from sqlalchemy import create_engine, func, select

    from service.models import Comment

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Comment.decided_by, func.count(Comment.id))
                .where(Comment.source == "akismet")
                .group_by(Comment.decided_by)
            )
            return {str(who): int(count) for who, count in rows}
    finally:
        engine.dispose()


@contextmanager
def target(args: argparse.Namespace) -> Iterator[tuple[str, str, str | None]]:
    if args.start:
        with local_stack(
            redis_url=args.redis_url,
            database_url=args.database_url,
            web_workers=args.web_workers,
            web_threads=args.web_threads,
            worker_pool=args.worker_pool,
            worker_concurrency=args.worker_concurrency,
            port=args.port,
        ) as stack:
            yield stack["url"], stack["akismet_key"], stack["database_url"]
    else:
        if not (args.url and args.key):
            raise SystemExit("give --url and --key of a running Bouncer, or --start")
        yield args.url, args.key, args.database_url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running Bouncer, e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", help="the site's 12-character Akismet key")
    parser.add_argument("--start", action="store_true", help="start gunicorn + a Celery worker for the run")
    parser.add_argument(
        "--redis-url", help="with --start: a scratch Redis base (4 dbs are flushed); default: a private Redis"
    )
    parser.add_argument("--database-url", help="with --start: default SQLite in a temp dir; else for the report")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=16)
    parser.add_argument("--worker-pool", default="prefork", choices=["threads", "prefork", "solo"])
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--timeout", type=float, default=10.0, help="a request slower than this is an error")
    parser.add_argument("--target-p99", type=float, default=1.0, help="seconds")
    args = parser.parse_args()

    with target(args) as (url, key, database_url):
        if args.warmup > 0:
            asyncio.run(run(url, key, min(args.clients, 8), args.warmup, args.timeout))
        result = asyncio.run(run(url, key, args.clients, args.duration, args.timeout))
        if database_url:
            result["decided_by"] = decided_by(database_url)
    print(json.dumps(result, indent=2))
    ok = result["errors"] == 0 and result["latency_ms"]["p99"] < args.target_p99 * 1000
    print(f"comment-check p99 {result['latency_ms']['p99']} ms, errors {result['errors']}: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
