"""What the request-duration histogram costs a request: the middleware and the endpoint hook around a WSGI app that
does nothing, against the bare app, in one process (prometheus_client's default mode) and in gunicorn's mode
(multiprocess: every observation written to a memory-mapped file). Prints microseconds per request.

    python benchmarks/bench_request_metrics.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(requests: int) -> float:
    """Microseconds per request that the metrics add, best of five rounds."""
    from flask import Flask

    from service.metrics import init_request_metrics

    def noop(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return ""

    init_request_metrics(app)
    middleware = app.wsgi_app
    hook = app.before_request_funcs[None][0]
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/comments"}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    def one_round(call: Any) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            call(environ, start_response)
        return (time.perf_counter() - started) / requests

    with app.test_request_context("/", method="POST"):
        hook_cost = min(one_round(lambda _e, _s: hook()) for _ in range(5))
    middleware.wsgi_app = noop  # type: ignore[attr-defined]  # the middleware alone, around nothing
    bare = min(one_round(noop) for _ in range(5))
    wrapped = min(one_round(middleware) for _ in range(5))
    return (wrapped - bare + hook_cost) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{measure(args.requests):.2f}")
        return
    with tempfile.TemporaryDirectory() as directory:
        for mode, env in [
            ("one process", {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}),
            ("multiprocess (gunicorn)", {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}),
        ]:
            argv = [sys.executable, __file__, "--child", "--requests", str(args.requests)]
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout.strip()
            print(f"{mode}: {out} µs per request")


if __name__ == "__main__":
    main()
