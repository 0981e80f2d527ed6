"""``GET /metrics`` (the Prometheus text format, parsed as Prometheus would) and ``GET /api/v1/ready``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, LiveServer, post_comment

DURATION = "bouncer_http_request_duration_seconds"
ROW_COUNTS = ("bouncer_comments", "bouncer_decided_comments", "bouncer_callbacks", "bouncer_queue_length")


def test_metrics_are_valid_prometheus_text_with_one_content_type(client: Any, site: dict[str, Any]) -> None:
    assert post_comment(client, site["api_key"], {"content": "counted while pending"}, wait=0).status_code == 202
    answer = client.get("/metrics")
    assert answer.status_code == 200
    # One charset parameter: Flask appended a second "; charset=utf-8" to prometheus_client's content type, a
    # malformed header (RFC 2045: a parameter must not be given more than once) that Prometheus 3, which fails
    # a scrape whose Content-Type it cannot parse, only tolerates because Go's parser lets equal repeats pass.
    content_type = answer.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=") and content_type.lower().count("charset=") == 1
    families = {f.name: f for f in text_string_to_metric_families(answer.get_data(as_text=True))}
    assert {"bouncer_comments", "bouncer_callbacks", "bouncer_queue_length"} <= set(families)
    assert [s.value for s in families["bouncer_database_up"].samples] == [1.0]
    pending = [s for s in families["bouncer_comments"].samples if s.labels == {"status": "pending", "decision": ""}]
    assert pending and pending[0].value >= 1
    queues = {s.labels["queue"] for s in families["bouncer_queue_length"].samples}
    assert {"score", "callbacks", "default", "retrain"} <= queues


def _decided_samples(client: Any) -> dict[tuple[str, str], float]:
    from service.metrics import COLLECTOR

    COLLECTOR._cached = (0.0, [])  # no 5-second cache between the two scrapes of a test
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    samples = families["bouncer_decided_comments"].samples
    return {(s.labels["decision"], s.labels["decided_by"]): s.value for s in samples}


def test_decided_comments_by_decision_and_decider(client: Any, site: dict[str, Any]) -> None:
    """Who decided is a label of a few values: the models, a moderator (whoever it is: no label per user), the blog."""
    from service.db import session_scope
    from service.models import Comment

    before = _decided_samples(client)
    with session_scope() as session:
        for decided_by in ("worker", "user:7", "user:8", "blog", "akismet", "import", "something-new", None):
            session.add(
                Comment(site_id=site["id"], content="x", status="decided", decision="hold", decided_by=decided_by)
            )
    after = _decided_samples(client)
    moved = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    # the session's worker may decide comments of earlier tests between the two scrapes: "model" moves by 1 or more
    assert moved.pop(("hold", "model"), 0) >= 1
    assert {k: v for k, v in moved.items() if k[1] != "model"} == {
        ("hold", "moderator"): 2,
        ("hold", "blog"): 1,
        ("hold", "blog_akismet"): 1,
        ("hold", "import"): 1,
        ("hold", "other"): 2,  # an unknown decider, and none stored (rows written without one, as tests do)
    }
    deciders = {"model", "model_web", "moderator", "blog", "blog_akismet", "import", "other"}
    assert {decided_by for _, decided_by in after} <= deciders


READY_PROBE = """
import json
from service.app import create_app
answer = create_app({"TESTING": True}).test_client().get("/api/v1/ready")
print(json.dumps({"status": answer.status_code, "body": answer.get_json()}))
"""


READY_TWICE_PROBE = """
import json
from service.app import create_app
client = create_app({"TESTING": True}).test_client()
answers = [client.get("/api/v1/ready") for _ in range(3)]  # a load balancer polls
print(json.dumps([{"status": a.status_code, "body": a.get_data(as_text=True)} for a in answers]))
"""


def test_ready_names_a_broken_model_without_its_details(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    """/ready needs no key: it said "error: FileExistsError: [Errno 17] File exists: '/srv/…/models/spam'" (paths
    of the host). It now says which model failed and no more; the log has the detail, once, not once per poll."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    models_dir = tmp_path / "hidden-models-place"
    models_dir.mkdir()
    (models_dir / "spam").write_text("not a directory")  # the spam registry cannot be made; abuse seeds as usual
    probe = subprocess.run(
        [sys.executable, "-c", READY_TWICE_PROBE],
        cwd=REPO,
        env={**env, "BOUNCER_MODELS_DIR": str(models_dir), "BOUNCER_LOG_LEVEL": "INFO"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout.strip().splitlines()[-1])
    for answer in answers:
        assert answer["status"] == 503, answer
        assert "hidden-models-place" not in answer["body"] and "Errno" not in answer["body"]
        body = json.loads(answer["body"])
        assert body["status"] == "not_ready"
        models = body["checks"]["models"]
        assert models["spam"] == "error: spam model failed to load; see the log", models
        assert models["abuse"].startswith("abuse-"), models  # the kind that loads is reported as before
    logged = [line for line in probe.stderr.splitlines() if "the active spam model failed to load" in line]
    assert len(logged) == 1, probe.stderr[-3000:]
    assert "hidden-models-place" in logged[0]  # the operator sees where


def test_ready_says_what_is_wrong_with_the_database(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    """Readiness exists to say what is wrong: 'OperationalError' alone does not tell refused from a missing schema."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")} | bouncer_env
    for url, reason in [
        ("postgresql://bouncer@127.0.0.1:1/bouncer", "OperationalError: connection failed: connection to server at"),
        # SELECT 1 answers without any table: the database was "ok" while every request would fail
        (f"sqlite:///{tmp_path / 'no-schema.db'}", "the database has no schema: run `bouncer db upgrade`"),
        (f"sqlite:///{tmp_path / 'behind.db'}", "the schema is at revision none, this code needs "),
        # a revision this code has no script of is newer (rolling upgrade): this process stays ready
        (f"sqlite:///{tmp_path / 'newer.db'}", None),
        (bouncer_env["BOUNCER_DATABASE_URL"], None),
    ]:
        if url.endswith(("behind.db", "newer.db")):
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
                if url.endswith("newer.db"):
                    conn.execute("INSERT INTO alembic_version VALUES ('9999')")
        probe = subprocess.run(
            [sys.executable, "-c", READY_PROBE],
            cwd=REPO,
            env={**env, "BOUNCER_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.returncode == 0, probe.stderr
        answer = json.loads(probe.stdout.strip().splitlines()[-1])
        database = answer["body"]["checks"]["database"]
        if reason is None:
            assert database == "ok", answer
        else:
            assert answer["status"] == 503 and answer["body"]["status"] == "not_ready"
            assert database.startswith("error: ") and reason in database, database


def _request_counts(text: str) -> dict[tuple[str, str, str], float]:
    """The histogram's ``_count`` per (endpoint, method, status) in a scrape; every family appears once."""
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), sorted(types)
    assert {DURATION, *ROW_COUNTS} <= set(types)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families[DURATION].samples
    return {
        (s.labels["endpoint"], s.labels["method"], s.labels["status"]): s.value
        for s in samples
        if s.name == f"{DURATION}_count"
    }


def test_request_durations_by_endpoint_method_and_status(client: Any, site: dict[str, Any]) -> None:
    """Every answer is observed under its Flask endpoint; a path no route matches is ``unmatched``, never itself, and
    a made-up method is ``other``: a client cannot create series. A refused request (413 in the first hook) counts."""
    before = _request_counts(client.get("/metrics").get_data(as_text=True))
    for _ in range(3):
        assert client.get("/api/v1/health").status_code == 200
    for n in range(2):
        assert client.get(f"/no/such/page-{n}").status_code == 404
    assert client.open("/api/v1/health", method="BREW").status_code == 405
    assert post_comment(client, "not-a-key", {"content": "who am I"}).status_code == 401
    assert post_comment(client, site["api_key"], {"content": "x" * 70_000}).status_code == 413
    text = client.get("/metrics").get_data(as_text=True)
    after = _request_counts(text)
    moved = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert moved == {
        ("api.health", "GET", "200"): 3,
        ("unmatched", "GET", "404"): 2,
        ("unmatched", "other", "405"): 1,
        ("api.create_comment", "POST", "401"): 1,
        ("api.create_comment", "POST", "413"): 1,
        ("metrics.metrics", "GET", "200"): 1,  # the first scrape, observed once answered
    }
    assert "no/such" not in text and "BREW" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    buckets = {s.labels["le"] for s in families[DURATION].samples if s.name == f"{DURATION}_bucket"}
    assert {"0.005", "0.1", "10.0", "+Inf"} <= buckets


def _children(pid: int) -> list[int]:
    """The pids of a process's children (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """A gunicorn worker stopped (SIGSTOP): meanwhile every new connection is accepted by the other one."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _scrape(url: str) -> dict[tuple[str, str, str], float]:
    answer = httpx.get(url + "/metrics", timeout=30)
    assert answer.status_code == 200
    return _request_counts(answer.text)


def test_a_scrape_sums_the_requests_of_every_gunicorn_worker(bouncer_env: dict[str, str], tmp_path: Path) -> None:
    """Under gunicorn (2 workers, started as bouncer web starts it) the worker answering a scrape reports the
    requests of both: each worker takes its share while the other is stopped, and each one's scrape shows the sum.
    The metrics directory is the master's own (mode 0700, one file per worker) and goes when it stops."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = LiveServer({**bouncer_env, "TMPDIR": str(temp)}, tmp_path / "web.log")
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the default: no directory set by the operator
    server.start()
    try:
        assert server.proc is not None
        first, second = workers = _children(server.proc.pid)
        assert len(workers) == 2, workers
        key = ("unmatched", "GET", "404")
        with _stopped(first):
            for _ in range(3):
                assert httpx.get(server.url + "/nowhere", timeout=30).status_code == 404
        with _stopped(second):
            for _ in range(4):
                assert httpx.get(server.url + "/nowhere", timeout=30).status_code == 404
            by_first = _scrape(server.url)
        with _stopped(first):
            by_second = _scrape(server.url)
        assert by_first[key] == by_second[key] == 7
        (directory,) = temp.glob("bouncer-metrics-*")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert {p.name for p in directory.iterdir()} >= {f"histogram_{pid}.db" for pid in workers}
    finally:
        server.stop()
    assert not directory.exists()


def test_the_gunicorn_hooks_keep_an_operators_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR set by the operator is used, created if missing, and neither emptied nor removed;
    unset, the master makes a fresh directory of its own and removes it when it exits."""
    from service import gunicorn_config

    operators = tmp_path / "operator" / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(operators))
    monkeypatch.setattr(gunicorn_config, "_created", [])
    gunicorn_config.on_starting(None)
    (operators / "kept.db").write_bytes(b"")
    gunicorn_config.on_starting(None)
    gunicorn_config.on_exit(None)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(operators) and (operators / "kept.db").exists()

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gunicorn_config.on_starting(None)
    own = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert own.parent == tmp_path and own.name.startswith("bouncer-metrics-")
    assert [p.name for p in own.iterdir()] == [gunicorn_config.LOCK_NAME]  # nothing counted yet
    gunicorn_config.on_exit(None)
    assert not own.exists()


_MASTER = """
import sys, time
from service import gunicorn_config
gunicorn_config.on_starting(None)
print(gunicorn_config._created[0], flush=True)
time.sleep(120)
"""


def test_a_master_removes_the_directories_of_killed_masters(tmp_path: Path) -> None:
    """A SIGKILLed master never runs on_exit; the next master to start removes its directory, and only such: a
    running master's stays, as does a directory without a lock file (not one a master made)."""
    from service.gunicorn_config import LOCK_NAME

    env = {**os.environ, "TMPDIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": ""}
    masters = [
        subprocess.Popen([sys.executable, "-c", _MASTER], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        killed, running = (Path(m.stdout.readline().strip()) for m in masters if m.stdout)
        (killed / "histogram_1.db").write_bytes(b"x")
        other = tmp_path / "bouncer-metrics-other"
        other.mkdir()
        masters[0].kill()
        masters[0].wait(timeout=30)
        assert killed.is_dir() and running.is_dir()

        result = subprocess.run(
            [sys.executable, "-c", _MASTER.replace("time.sleep(120)", "")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        started = Path(result.stdout.strip())
        assert not killed.exists()
        assert running.is_dir() and (running / LOCK_NAME).exists()
        assert other.is_dir()
        assert started.is_dir()  # it exited without on_exit too (a kill), so it is now the abandoned one
    finally:
        for master in masters:
            master.kill()
            master.wait(timeout=30)
            if master.stdout:
                master.stdout.close()
