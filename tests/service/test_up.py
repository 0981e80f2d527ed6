"""End to end: ``bouncer up`` with embedded defaults takes a comment, decides it, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def bouncer_command() -> list[str]:
    """The console script of this interpreter's environment, or the module when the project is not installed."""
    script = Path(sys.executable).with_name("bouncer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Up:
    """A running ``bouncer up`` with its output captured to a file (read it when an assertion fails)."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Only this test's settings: nothing inherited from a BOUNCER_* of the session or the shell.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")}
        self.env.update({"BOUNCER_DATA_DIR": str(data_dir), "BOUNCER_BIND": f"127.0.0.1:{self.port}"})
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn's hooks make one of their own, under TMPDIR
        self.tmp_dir = data_dir.parent / "tmp"
        self.tmp_dir.mkdir(exist_ok=True)
        self.env["TMPDIR"] = str(self.tmp_dir)
        self.log_path = data_dir.parent / "up.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*bouncer_command(), "up"], env=self.env, cwd=data_dir.parent, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for(self, path: str, timeout: float = 180.0) -> None:
        """Until ``path`` answers 200: /health (the web), /ready (also Redis, a live worker, the models)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"bouncer up exited early:\n{self.output()}"
            try:
                if httpx.get(f"{self.base}{path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"no 200 from {path} after {timeout:.0f} s:\n{self.output()}")

    def wait_for_output(self, text: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, f"bouncer up exited early:\n{self.output()}"
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} not printed after {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    # A short path: the embedded Redis socket path must fit in 107 bytes.
    data_dir = tmp_path_factory.mktemp("up") / "var"
    running = Up(data_dir)
    yield running
    running.close()


def test_up_runs_everything_decides_a_comment_and_stops_cleanly(up: Up) -> None:
    up.wait_for("/api/v1/health")
    family = psutil.Process(up.proc.pid).children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in family)
    for expected in ("redis-server", "gunicorn", "celery -A workers.celery_app:celery worker", "beat"):
        assert expected in names, f"{expected} not among the children: {names}"
    workers = [" ".join(p.cmdline()) for p in family if "worker" in p.cmdline()]
    # Scoring and retraining have workers of their own: a retrain never holds up a decision.
    assert any("--queues score,default,callbacks " in w for w in workers), workers
    assert any("--queues retrain " in w and "--max-tasks-per-child 1" in w for w in workers), workers

    created = subprocess.run(
        [*bouncer_command(), "sites", "create", "--name", "T", "--url", "https://t.example"],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = json.loads(created.stdout)["api_key"]

    # The banner waits for readiness (a live worker, the models loaded): a comment sent then is decided in time.
    up.wait_for_output("Bouncer is ready at")
    headers = {"Authorization": f"Bearer {api_key}"}
    spam = {
        "content": "CHEAP VIAGRA!!! Buy now at http://cheap-pills.example.xyz best price, click here "
        "http://pills.example.xyz/buy and win a FREE iPhone, call +1-800-555-0199 now!!!",
        "author": {"name": "Cheap Pills Online Store", "email": "sales@pills.example.xyz"},
    }
    ham = {"content": "Thanks for the clear write-up, the section on WAL mode answered my question."}
    for comment, decision in ((spam, "reject"), (ham, "approve")):
        answer = httpx.post(f"{up.base}/api/v1/comments", json=comment, headers=headers, timeout=15)
        assert answer.status_code == 200, answer.text  # decided within the default wait
        body = answer.json()
        assert (body["status"], body["decision"]) == ("decided", decision), body
        assert body["reasons"]
        # The embedded Redis runs the stream checks too (its Lua must suit the embedded server's version).
        assert not any("skipped" in reason for reason in body["reasons"]), body["reasons"]
        polled = httpx.get(f"{up.base}/api/v1/comments/{body['id']}", headers=headers, timeout=5).json()
        assert {k: polled[k] for k in ("status", "decision", "scores", "reasons")} == {
            k: body[k] for k in ("status", "decision", "scores", "reasons")
        }

    # The request histogram sums the web's workers (prometheus_client's multiprocess mode, in a private directory).
    scrape = httpx.get(f"{up.base}/metrics", timeout=15).text
    webhook = 'bouncer_http_request_duration_seconds_count{endpoint="api.create_comment",method="POST",status="200"}'
    assert f"{webhook} 2.0" in scrape.splitlines(), scrape
    assert len(list(up.tmp_dir.glob("bouncer-metrics-*"))) == 1

    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(timeout=60) == 0, up.output()
    assert not list(up.tmp_dir.glob("bouncer-metrics-*")), "gunicorn left its metrics directory behind"
    # Every part stopped within its grace period, none had to be killed (how long that takes is the machine's load).
    assert "did not stop in time" not in up.output(), up.output()
    _gone, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    assert not (Path(up.env["BOUNCER_DATA_DIR"]) / "redis.sock").exists()
