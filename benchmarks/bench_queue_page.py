"""Benchmark: server time of the moderation queue page with 10,000 held comments.

Builds a fresh database (SQLite in a temp dir, or BENCH_DATABASE_URL for PostgreSQL), inserts 10,000 held comments
(plus 10,000 decided ones, as a queue lives beside history) over 5 sites, then renders the queue page in-process
through the full Flask stack (routing, session, queries, Jinja) and prints the median and p95 per page variant.

    python benchmarks/bench_queue_page.py [--held 10000] [--runs 30] [--redis-url redis://127.0.0.1:6379/8]

Without ``--redis-url`` it starts a private Redis for the run (as the other benchmarks do); with one, the 4
databases from its number are flushed: point it at a scratch Redis base, never at production.

Exit status 1 when the default queue page's median is over the 300 ms budget.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stack import percentile, redis_for_benchmark  # noqa: E402 - after the path setup

BUDGET_MS = 300.0


def _setup_env(tmp: str, redis_url: str) -> None:
    os.environ["BOUNCER_DATA_DIR"] = tmp
    os.environ["BOUNCER_MODELS_DIR"] = str(Path(tmp) / "models")
    os.environ["BOUNCER_LOG_LEVEL"] = "WARNING"
    if os.environ.get("BENCH_DATABASE_URL"):
        os.environ["BOUNCER_DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    # Not the environment's BOUNCER_REDIS_URL: a benchmark never writes to a Redis somebody else uses.
    os.environ["BOUNCER_REDIS_URL"] = redis_url


def _seed(held: int) -> tuple[int, int]:
    """Insert the comments; returns (admin id, moderator id)."""
    from sqlalchemy import insert

    from service.db import session_scope
    from service.models import Comment, UserSite
    from service.sites import create_site
    from service.users import create_user

    rng = random.Random(7)
    words = "great post thanks cheap pills click here winter roses recipe idiot buy now free offer love it".split()
    now = datetime.now(UTC)
    with session_scope() as db:
        sites = [create_site(db, f"Blog {i}", f"https://blog{i}.example")[0].id for i in range(5)]
        admin, _ = create_user(db, "admin@bench.test", "admin", "benchmark-password")
        moderator, _ = create_user(db, "mod@bench.test", "moderator", "benchmark-password")
        db.add_all([UserSite(user_id=moderator.id, site_id=sites[0]), UserSite(user_id=moderator.id, site_id=sites[1])])
        admin_id, moderator_id = admin.id, moderator.id
    rows = []
    for i in range(held * 2):
        decision = "hold" if i < held else rng.choice(["approve", "approve", "reject"])
        spam, abuse = rng.random(), rng.random() * 0.6
        rows.append(
            {
                "site_id": rng.choice(sites),
                "external_id": f"c{i}",
                "content": " ".join(rng.choice(words) for _ in range(rng.randint(8, 80))),
                "author_name": f"Author {i % 1500}",
                "author_email": f"author{i % 1500}@example.org",
                "author_url": "",
                "author_ip": f"198.51.100.{i % 250}",
                "user_agent": "Mozilla/5.0",
                "post_url": f"https://blog.example/post-{i % 300}",
                "post_title": f"Post number {i % 300}",
                "post_excerpt": "",
                "type": "comment",
                "lang": "en",
                "referrer": "",
                "honeypot": "",
                "meta": {},
                "is_test": False,
                "source": "api",
                "status": "decided",
                "decision": decision,
                "auto_decision": decision,
                "category": ("abuse" if abuse > spam else "spam") if decision != "approve" else None,
                "decided_by": "worker",
                "spam_score": spam,
                "abuse_score": abuse,
                "reasons": [f"spam score {spam:.2f}: links, new author"],
                "categories": {},
                "model_versions": {"spam": "v1", "abuse": "v1"},
                "campaign_key": f"k{i % 400}" if i % 7 == 0 else None,
                "received_at": now - timedelta(seconds=i * 13),
                "decided_at": now - timedelta(seconds=i * 13),
                "enqueue_count": 1,
            }
        )
    with session_scope() as db:
        for start in range(0, len(rows), 2000):
            db.execute(insert(Comment), rows[start : start + 2000])
    return admin_id, moderator_id


def _client_for(app: object, user_id: int) -> object:
    import secrets

    from service.auth.session import password_fingerprint
    from service.db import session_scope
    from service.models import User, UserSession
    from service.security import hash_key

    client = app.test_client()  # type: ignore[attr-defined]
    token = secrets.token_urlsafe(32)
    with session_scope() as db:
        user = db.get(User, user_id)
        assert user is not None
        fingerprint = password_fingerprint(user.password_hash)
        db.add(UserSession(token_hash=hash_key(token), user_id=user_id))
    with client.session_transaction() as sess:
        sess["uid"], sess["pw"], sess["sid"] = user_id, fingerprint, token
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--redis-url", help="a scratch Redis base (4 dbs are flushed); default: a private Redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bouncer-bench-") as tmp, redis_for_benchmark(args.redis_url) as redis_url:
        _setup_env(tmp, redis_url)
        print(f"Redis {redis_url}")
        from service.app import create_app
        from service.migrate import upgrade

        upgrade()
        started = time.perf_counter()
        admin_id, moderator_id = _seed(args.held)
        print(f"seeded {args.held} held + {args.held} decided comments in {time.perf_counter() - started:.1f}s")
        app = create_app()
        variants = [
            ("queue, admin (all sites)", admin_id, "/moderation/"),
            ("queue, moderator (2 of 5 sites)", moderator_id, "/moderation/"),
            ("queue, most uncertain first", admin_id, "/moderation/?sort=uncertain"),
            ("queue, page 200", admin_id, "/moderation/?page=200"),
            ("queue, search 'roses'", admin_id, "/moderation/?q=roses"),
            ("queue, spam 0.5-0.9, site 1", admin_id, "/moderation/?category=spam&score_min=0.5&score_max=0.9&site=1"),
            ("all comments", admin_id, "/moderation/all"),
        ]
        headline = 0.0
        for name, user_id, path in variants:
            client = _client_for(app, user_id)
            response = client.get(path)  # type: ignore[attr-defined]
            assert response.status_code == 200, (path, response.status_code)
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                response = client.get(path)  # type: ignore[attr-defined]
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
            median, p95 = percentile(times, 50), percentile(times, 95)
            headline = headline or median
            print(f"{name:40s} median {median:6.1f} ms   p95 {p95:6.1f} ms   ({len(response.data) // 1024} KiB)")
        verdict = "OK" if headline < BUDGET_MS else "OVER BUDGET"
        print(
            f"queue page with {args.held} held comments: {headline:.1f} ms median server time "
            f"(budget {BUDGET_MS:.0f} ms) {verdict}"
        )
        return 0 if headline < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
