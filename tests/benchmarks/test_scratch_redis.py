"""The queue-page benchmark and the screenshot script run on a Redis of their own, like the other benchmarks.

They wrote to 127.0.0.1:6379 db 12 (or to whatever BOUNCER_REDIS_URL the shell had): a Redis somebody else may use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import REPO

SCRIPTS = {
    "queue page": ["benchmarks/bench_queue_page.py", "--held", "20", "--runs", "1"],
    "screenshots": ["tests/ui/make_screenshots.py"],
}


def _run(argv: list[str], tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")}
    env["BOUNCER_REDIS_URL"] = "redis://127.0.0.1:9/0"  # the shell's Redis is not the one used
    if argv[0].endswith("make_screenshots.py"):
        argv = [*argv, "--out", str(tmp_path / "shots")]
    run = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=list(SCRIPTS))
def test_a_private_redis_by_default(script: str, tmp_path: Path) -> None:
    used = [line for line in _run(SCRIPTS[script], tmp_path).splitlines() if line.startswith("Redis ")]
    assert len(used) == 1 and used[0].startswith("Redis unix://"), used
    socket = Path(used[0].removeprefix("Redis unix://").partition("?")[0])
    assert not socket.parent.exists()  # the private Redis and its directory are gone after the run


def test_a_scratch_redis_when_given(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    # Four databases past the test session's (it flushes its base and the three after it).
    base, _, number = bouncer_env["BOUNCER_REDIS_URL"].rpartition("/")
    scratch = f"{base}/{int(number or 0) + 4}"
    marker = redis.Redis.from_url(scratch)
    marker.set("left-by-someone", "1")
    try:
        out = _run([*SCRIPTS["queue page"], "--redis-url", scratch], tmp_path)
        assert f"Redis {scratch}" in out.splitlines()
        assert marker.get("left-by-someone") is None  # flushed first, as the other benchmarks do with --redis-url
    finally:
        marker.flushdb()
        marker.close()
