"""Make the UI screenshots in docs/screenshots/ (queue, comment detail, admin models page) from demo data.

Runs the real app in-process against a throw-away SQLite database and drives Debian's Chromium:

    python tests/ui/make_screenshots.py [--out docs/screenshots] [--redis-url redis://127.0.0.1:6379/8]

Without ``--redis-url`` it starts a private Redis for the run (benchmarks/stack.py, as the benchmarks do); with
one, the 4 databases from its number are flushed: point it at a scratch Redis base.

The models page shows the real model registry when it has versions; otherwise a demo registry with two
versions per kind, so the page can be seen before any model was trained.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.ui.helpers import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  # after the sys.path line above

PASSWORD = "screenshot-password"

COMMENTS: list[dict[str, Any]] = [
    {
        "author_name": "Marta Kowalska",
        "author_email": "marta.k@example.org",
        "author_ip": "203.0.113.24",
        "content": "I tried the overwintering method from this post last year and lost half my geraniums. "
        "Do you cut them back before or after bringing them inside? More details here: https://garden-forum.example/t/4411",
        "post_title": "Overwintering geraniums",
        "spam_score": 0.47,
        "abuse_score": 0.03,
        "category": "spam",
        "reasons": ["spam score 0.47: link to a domain first seen on this site", "first comment from this author"],
        "minutes": 4,
    },
    {
        "author_name": "BestDeals4U",
        "author_email": "promo@cheap-meds.example",
        "author_ip": "198.51.100.7",
        "author_url": "http://cheap-meds.example/buy",
        "content": "Great article!!! Check out cheap meds online, no prescription needed, fast shipping worldwide "
        "http://cheap-meds.example/buy?ref=garden",
        "post_title": "Pruning roses in February",
        "spam_score": 0.86,
        "abuse_score": 0.02,
        "category": "spam",
        "reasons": ["same text as 14 comments in the last hour", "spam score 0.86: pharmacy words, 1 link"],
        "campaign": True,
        "minutes": 9,
    },
    {
        "author_name": "tomas_h",
        "author_email": "tomas.h@example.net",
        "author_ip": "192.0.2.88",
        "content": "Honestly this is the dumbest advice I have read all year. "
        "Anyone who follows it deserves a dead garden.",
        "post_title": "Composting in small spaces",
        "spam_score": 0.05,
        "abuse_score": 0.71,
        "category": "abuse",
        "reasons": ["abuse score 0.71: insult"],
        "minutes": 17,
        "history": (2, 1),
    },
    {
        "author_name": "Léa Martin",
        "author_email": "lea.martin@example.fr",
        "author_ip": "2001:db8::42",
        "content": "Merci pour cet article ! Est-ce que la méthode marche aussi pour les hortensias ?",
        "post_title": "Overwintering geraniums",
        "spam_score": 0.52,
        "abuse_score": 0.01,
        "category": "spam",
        "reasons": ["spam score 0.52: short text, language differs from the post"],
        "minutes": 26,
        "history": (5, 0),
    },
    {
        "author_name": "SEO Expert",
        "author_email": "backlinks@rank-fast.example",
        "author_ip": "198.51.100.61",
        "content": "Nice blog. I can get your site to the first page of Google in 7 days. "
        "Contact me: rank-fast.example",
        "post_title": "Seed catalogue review",
        "spam_score": 0.78,
        "abuse_score": 0.0,
        "category": "spam",
        "reasons": ["12th comment from this IP in 5 minutes", "spam score 0.78: commercial offer"],
        "minutes": 41,
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed() -> int:
    """Demo sites, users and comments; returns the id of the comment shown on the detail page."""
    from service.db import session_scope
    from service.models import Comment, ModerationEvent, UserSite
    from service.sites import create_site
    from service.users import create_user

    now = datetime.now(UTC)
    with session_scope() as db:
        garden, _ = create_site(db, "Winter Garden Blog", "https://garden.example", "https://garden.example/cb")
        recipes, _ = create_site(db, "Kitchen Notes", "https://recipes.example")
        admin, _ = create_user(db, "admin@bouncer.example", "admin", PASSWORD)
        mod, _ = create_user(db, "sam@bouncer.example", "moderator", PASSWORD)
        db.add(UserSite(user_id=mod.id, site_id=garden.id))
        detail_id = 0
        for i, spec in enumerate(COMMENTS):
            spec = dict(spec)
            approved, rejected = spec.pop("history", (0, 0))
            minutes = spec.pop("minutes")
            is_campaign = spec.pop("campaign", False)
            site_id = garden.id if i % 3 else recipes.id
            for j in range(approved + rejected):
                db.add(
                    Comment(
                        site_id=site_id,
                        content="An earlier comment.",
                        author_name=spec["author_name"],
                        author_email=spec["author_email"],
                        status="decided",
                        decision="approve" if j < approved else "reject",
                        category=None if j < approved else "spam",
                        received_at=now - timedelta(days=10 + j),
                        spam_score=0.1,
                        abuse_score=0.05,
                    )
                )
            copies = 6 if is_campaign else 1
            for k in range(copies):
                c = Comment(
                    site_id=site_id,
                    post_url=f"https://garden.example/{spec['post_title'].lower().replace(' ', '-')}",
                    status="decided",
                    decision="hold",
                    auto_decision="hold",
                    decided_by="worker",
                    received_at=now - timedelta(minutes=minutes + k * 3),
                    decided_at=now - timedelta(minutes=minutes + k * 3),
                    campaign_key="c0ffee1234" if is_campaign else None,
                    model_versions={"spam": "spam-2026.11.20", "abuse": "abuse-2026.11.18"},
                    user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
                    **spec,
                )
                db.add(c)
                db.flush()
                db.add(
                    ModerationEvent(
                        comment_id=c.id,
                        site_id=site_id,
                        actor="model",
                        action="decide",
                        from_decision=None,
                        to_decision="hold",
                        category=spec["category"],
                        created_at=c.received_at,
                    )
                )
                if i == 2 and k == 0:
                    detail_id = c.id
    return detail_id


@dataclass
class _Info:
    version: str
    created_at: datetime
    status: str
    metrics: dict[str, float]
    thresholds: dict[str, float]
    manifest: dict[str, Any] = field(default_factory=dict)


class DemoRegistry:
    """Stands in for the model registry only when it has no versions yet (fresh checkout)."""

    def versions(self, kind: str) -> list[_Info]:
        base = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
        return [
            _Info(
                f"{kind}-2026.11.20",
                base,
                "active",
                {"precision": 0.962, "recall": 0.913, "f1": 0.937, "roc_auc": 0.987, "false_positive_rate": 0.004},
                {"approve_below": 0.4, "reject_at": 0.92},
                {"data": ["shared/data (demo)"], "sklearn": "1.5"},
            ),
            _Info(
                f"{kind}-2026.11.27",
                base + timedelta(days=7),
                "candidate",
                {"precision": 0.958, "recall": 0.925, "f1": 0.941, "roc_auc": 0.988, "false_positive_rate": 0.005},
                {"approve_below": 0.4, "reject_at": 0.93},
            ),
            _Info(
                f"{kind}-2026.10.02",
                base - timedelta(days=49),
                "retired",
                {"precision": 0.941, "recall": 0.884, "f1": 0.912, "roc_auc": 0.979, "false_positive_rate": 0.007},
                {"approve_below": 0.35, "reject_at": 0.9},
            ),
        ]


def _use_demo_registry_if_empty() -> bool:
    import service.admin.models_page as models_page

    try:
        if any(models_page._registry().versions(kind) for kind in models_page.KINDS):
            return False
    except Exception:  # no registry yet: the classifiers package is not finished or has no models
        pass
    models_page._registry = DemoRegistry
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description="Make the UI screenshots.")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument("--redis-url", help="a scratch Redis base (4 dbs are flushed); default: a private Redis")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from benchmarks.stack import redis_for_benchmark

    with tempfile.TemporaryDirectory(prefix="bouncer-shots-") as tmp, redis_for_benchmark(args.redis_url) as redis_url:
        print(f"Redis {redis_url}")
        os.environ.update(
            {
                "BOUNCER_DATA_DIR": tmp,
                "BOUNCER_MODELS_DIR": str(Path(tmp) / "models"),
                "BOUNCER_LOG_LEVEL": "ERROR",
                # Not the environment's BOUNCER_REDIS_URL: demo data never goes to a Redis somebody else uses.
                "BOUNCER_REDIS_URL": redis_url,
            }
        )
        from playwright.sync_api import sync_playwright
        from werkzeug.serving import make_server

        from service.app import create_app
        from service.migrate import upgrade

        upgrade()
        detail_id = seed()
        demo = _use_demo_registry_if_empty()
        port = free_port()
        server = make_server("127.0.0.1", port, create_app(), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
                page.goto("/login")
                page.fill('input[name="email"]', "admin@bouncer.example")
                page.fill('input[name="password"]', PASSWORD)
                page.click('button[type="submit"]')
                page.wait_for_url("**/moderation/")
                page.screenshot(path=str(out / "queue.png"), full_page=False)
                page.goto(f"/moderation/comments/{detail_id}")
                page.screenshot(path=str(out / "detail.png"), full_page=True)
                page.goto("/admin/models")
                page.screenshot(path=str(out / "admin-models.png"), full_page=True)
                browser.close()
        finally:
            server.shutdown()
    note = " (demo model registry: no trained versions yet)" if demo else ""
    print(f"screenshots written to {out}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
