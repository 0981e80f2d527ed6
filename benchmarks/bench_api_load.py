"""Load benchmark of the native API: sustained decided comments/s and latency at N concurrent clients.

Starts gunicorn + a Celery worker against a real Redis (and SQLite unless --database-url), sends real comments from
the shared data for a set time from N concurrent keep-alive clients in this process, then checks that every
accepted comment was persisted and ends decided. Prints the figures.

    python benchmarks/bench_api_load.py --clients 16 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import sys
import time
from pathlib import Path

import psutil
from sqlalchemy import create_engine, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.stack import local_stack, percentile  # noqa: E402 - after the path setup


def cpu_by_component() -> dict[str, float]:
    """CPU seconds (user + system) so far of the web, worker, Redis and load-generator processes."""
    totals: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "gunicorn" in cmd and "service.wsgi" in cmd:
            part = "web"
        elif "celery" in cmd and "worker" in cmd and "bench-" in cmd:
            part = "worker"
        elif (proc.info["name"] or "").startswith("redis-server"):
            part = "redis"
        elif proc.pid == os.getpid():
            part = "load-generator"
        else:
            continue
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        totals[part] = totals.get(part, 0.0) + times.user + times.system
    return totals


def comment_texts(limit: int = 2000) -> list[str]:
    path = REPO.parent / "shared" / "data" / "spam" / "youtube.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        return [row["text"] for row in itertools.islice(csv.DictReader(fh), limit)]


async def client_loop(
    host: str, port: int, key: str, texts: list[str], start: int, stop_at: float, latencies: list[float],
    statuses: dict[int, int], ids: list[int],
) -> None:  # fmt: skip
    """One keep-alive HTTP/1.1 connection sending comments back to back (raw asyncio: a cheap load generator)."""
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    while time.monotonic() < stop_at:
        body = json.dumps(
            {
                "content": texts[i % len(texts)],
                "external_id": f"load-{start}-{i}",
                "author": {"name": f"reader {i % 97}", "ip": f"10.0.{i % 250}.{i % 200 + 1}"},
            }
        ).encode()
        request = (
            f"POST /api/v1/comments HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        t0 = time.perf_counter()
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        status = int(status_line.split()[1])
        statuses[status] = statuses.get(status, 0) + 1
        if status in (200, 202):
            ids.append(json.loads(payload)["id"])
        i += 1
    writer.close()


async def run_load(url: str, key: str, clients: int, duration: float) -> tuple[list[float], dict[int, int], list[int]]:
    host, port = url.removeprefix("http://").split(":")
    texts = comment_texts()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ids: list[int] = []
    stop_at = time.monotonic() + duration
    await asyncio.gather(
        *(
            client_loop(host, int(port), key, texts, c * 100_000, stop_at, latencies, statuses, ids)
            for c in range(clients)
        )
    )
    return latencies, statuses, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--redis-url", help="a scratch Redis base (4 dbs are flushed); default: a private Redis")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=16)
    parser.add_argument("--worker-pool", default="prefork")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()

    with local_stack(
        redis_url=args.redis_url,
        database_url=args.database_url,
        web_workers=args.web_workers,
        web_threads=args.web_threads,
        worker_pool=args.worker_pool,
        worker_concurrency=args.worker_concurrency,
    ) as stack:
        asyncio.run(run_load(stack["url"], stack["api_key"], args.clients, args.warmup))
        cpu_before = cpu_by_component()
        started = time.monotonic()
        latencies, statuses, ids = asyncio.run(run_load(stack["url"], stack["api_key"], args.clients, args.duration))
        elapsed = time.monotonic() - started
        cpu_used = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_by_component().items()}
        engine = create_engine(stack["database_url"].replace("postgresql://", "postgresql+psycopg://", 1))
        deadline = time.monotonic() + 120
        with engine.connect() as conn:
            while True:
                rows: dict[str, int] = dict(
                    conn.execute(
                        text("SELECT status, count(*) FROM comments WHERE id >= :lo GROUP BY status"),
                        {"lo": min(ids)},
                    ).all()
                )
                if rows.get("pending", 0) == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            stored = conn.execute(
                select(func.count()).select_from(text("comments")).where(text("id >= :lo")), {"lo": min(ids)}
            ).scalar()
        engine.dispose()

    decided = statuses.get(200, 0)
    database = "postgresql" if args.database_url else "sqlite"
    print(
        f"clients={args.clients} duration={elapsed:.1f}s web={args.web_workers}x{args.web_threads} "
        f"worker={args.worker_pool}x{args.worker_concurrency} database={database}"
    )
    print(f"requests={len(latencies)} statuses={dict(sorted(statuses.items()))}")
    print(f"decided within the request: {decided / elapsed:.0f}/s; all answers: {len(latencies) / elapsed:.0f}/s")
    print(
        f"latency ms: p50={percentile(latencies, 50) * 1000:.1f} p90={percentile(latencies, 90) * 1000:.1f} "
        f"p99={percentile(latencies, 99) * 1000:.1f} max={percentile(latencies, 100) * 1000:.1f}"
    )
    print(f"persisted: {stored} of {len(ids)} accepted; after draining: {rows}")
    per = ", ".join(f"{k} {v * 1000 / max(1, len(latencies)):.2f}" for k, v in sorted(cpu_used.items()))
    print(f"CPU ms per comment: {per}")


if __name__ == "__main__":
    main()
