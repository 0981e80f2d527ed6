"""The supervisor of ``bouncer up`` with tiny real child processes, and the embedded Redis it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from service.embedded_redis import EmbeddedRedisError, ping, redis_child, socket_path
from service.supervisor import ChildSpec, Supervisor, SupervisorError

REPO = Path(__file__).resolve().parents[2]

# Runs a Supervisor over the specs given as JSON, as `bouncer up` does, so that real signals reach it.
DRIVER = textwrap.dedent(
    """
    import json, sys
    from service.supervisor import ChildSpec, RestartPolicy, Supervisor
    specs, policy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    sup = Supervisor(RestartPolicy(**policy))
    sup.install_signal_handlers()
    for spec in specs:
        sup.start(ChildSpec(**spec))
    print("started", flush=True)
    sys.exit(sup.run(poll_interval=0.02))
    """
)

SLEEPER = "import time; time.sleep(120)"


def on_sigterm(log: Path, name: str, delay: float = 0.0) -> str:
    """A child that records its SIGTERM in ``log`` (after ``delay`` s) and exits 0."""
    return textwrap.dedent(
        f"""
        import signal, sys, time
        def stop(*_):
            time.sleep({delay})
            with open({str(log)!r}, "a") as fh:
                fh.write({name!r} + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        while True:
            time.sleep(1)
        """
    )


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class Driven:
    """A supervisor process started from the test, with its children found through psutil."""

    def __init__(self, specs: list[dict[str, object]], **policy: float) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(specs), json.dumps(policy)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "started"
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        _out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        for child in self.children:
            if child.is_running():
                child.kill()


@pytest.fixture
def driven() -> Iterator[Callable[..., Driven]]:
    made: list[Driven] = []

    def make(specs: list[dict[str, object]], **policy: float) -> Driven:
        made.append(Driven(specs, **policy))
        return made[-1]

    yield make
    for d in made:
        d.kill()


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


def test_sigterm_stops_children_in_tier_order(driven: Callable[..., Driven], tmp_path: Path) -> None:
    log = tmp_path / "stopped"
    d = driven(
        [
            {"name": "store", "argv": py(on_sigterm(log, "store")), "tier": 0},
            {"name": "worker", "argv": py(on_sigterm(log, "worker", delay=0.3)), "tier": 1},
            {"name": "web", "argv": py(on_sigterm(log, "web")), "tier": 2},
        ]
    )
    assert len(d.children) == 3
    time.sleep(0.3)  # let the children install their handlers
    d.proc.send_signal(signal.SIGTERM)
    code, err = d.finish()
    assert code == 0
    assert log.read_text().split() == ["web", "worker", "store"]
    assert gone(d.children)
    assert "stopping web" in err


def test_child_ignoring_sigterm_is_killed_after_the_grace_period(driven: Callable[..., Driven]) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    d = driven([{"name": "stubborn", "argv": py(stubborn)}], stop_grace=0.5)
    time.sleep(0.2)
    started = time.monotonic()
    d.proc.send_signal(signal.SIGINT)
    code, err = d.finish()
    assert code == 0
    assert time.monotonic() - started < 3
    assert "stubborn did not stop in time; killing it" in err
    assert gone(d.children)


def test_second_signal_cuts_the_grace_period_short(driven: Callable[..., Driven]) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    d = driven([{"name": "stubborn", "argv": py(stubborn)}], stop_grace=60)
    time.sleep(0.2)
    started = time.monotonic()
    d.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGINT)
    code, err = d.finish()
    assert code == 0
    assert time.monotonic() - started < 3
    assert "SIGINT received, stopping" in err
    assert gone(d.children)


def test_crashed_child_is_reported_and_restarted(driven: Callable[..., Driven], tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    flaky = textwrap.dedent(
        f"""
        import sys, time
        with open({str(starts)!r}, "a") as fh:
            fh.write("x")
        if len(open({str(starts)!r}).read()) == 1:
            sys.exit(3)
        time.sleep(120)
        """
    )
    d = driven(
        [{"name": "steady", "argv": py(SLEEPER)}, {"name": "flaky", "argv": py(flaky)}],
        backoff_initial=0.1,
    )
    wait_for(lambda: starts.exists() and starts.read_text() == "xx")
    restarted = [p for p in psutil.Process(d.proc.pid).children() if p not in d.children]
    assert len(restarted) == 1
    d.proc.send_signal(signal.SIGTERM)
    code, err = d.finish()
    assert code == 0
    assert "flaky exited with code 3 unexpectedly; restarting in 0.1 s" in err
    assert "restarting flaky" in err
    assert "steady exited" not in err  # the healthy child was left alone
    assert gone(d.children + restarted)


def test_gives_up_after_repeated_crashes_and_stops_everything(driven: Callable[..., Driven]) -> None:
    d = driven(
        [{"name": "steady", "argv": py(SLEEPER)}, {"name": "broken", "argv": py("import sys; sys.exit(7)")}],
        backoff_initial=0.01,
        max_crashes=3,
        window=30,
    )
    code, err = d.finish(timeout=15)
    assert code == 1
    assert err.count("broken exited with code 7 unexpectedly") == 2
    assert "broken exited with code 7; it crashed 3 times within 30 s, giving up: stopping everything" in err
    assert gone(d.children)


def test_killed_supervisor_leaves_no_orphans(driven: Callable[..., Driven]) -> None:
    d = driven([{"name": "a", "argv": py(SLEEPER)}, {"name": "b", "argv": py(SLEEPER)}])
    d.proc.kill()
    d.proc.communicate()
    wait_for(lambda: gone(d.children), timeout=5)


def test_start_fails_when_a_child_dies_before_it_is_ready() -> None:
    messages: list[str] = []
    sup = Supervisor(log=messages.append)
    with pytest.raises(SupervisorError, match="early exited with code 4 while starting"):
        sup.start(ChildSpec("early", py("import sys; sys.exit(4)"), ready=lambda: False))
    sup.stop_all()


def test_start_fails_when_a_child_is_not_ready_in_time() -> None:
    sup = Supervisor(log=lambda _m: None)
    spec = ChildSpec("slow", py(SLEEPER), ready=lambda: False, ready_timeout=0.3)
    with pytest.raises(SupervisorError, match="slow was not ready after 0.3 s"):
        sup.start(spec)
    sup.stop_all()


# -- embedded Redis ----------------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short path: a unix socket path must fit in 107 bytes.
    return Path(tmp_path_factory.mktemp("d"))


def start_redis(data_dir: Path) -> tuple[Supervisor, psutil.Process]:
    before = {p.pid for p in psutil.Process().children()}  # other tests' workers and servers may be running
    sup = Supervisor(log=lambda _m: None)
    sup.start(redis_child(data_dir))
    (server,) = [p for p in psutil.Process().children() if p.pid not in before]
    return sup, server


def test_embedded_redis_answers_on_its_socket_and_keeps_data_across_restarts(data_dir: Path) -> None:
    sup, server = start_redis(data_dir)
    try:
        assert ping(data_dir)
        assert "redis-server" in server.name()
        assert not any(c.laddr and c.status == psutil.CONN_LISTEN for c in server.net_connections("inet"))
        conn = redis.Redis(unix_socket_path=str(socket_path(data_dir)))
        conn.set("kept", "across a clean stop")
        conn.close()
    finally:
        sup.stop_all()
    assert not server.is_running()
    assert not ping(data_dir)

    sup, server = start_redis(data_dir)
    try:
        conn = redis.Redis(unix_socket_path=str(socket_path(data_dir)))
        assert conn.get("kept") == b"across a clean stop"
        conn.set("fsynced", "survives kill -9")
        time.sleep(1.5)  # appendfsync everysec
        conn.close()
        server.kill()
        server.wait(5)
    finally:
        sup.stop_all()
    assert (data_dir / "redis" / "appendonly.aof").exists()

    sup, server = start_redis(data_dir)
    try:
        conn = redis.Redis(unix_socket_path=str(socket_path(data_dir)))
        assert conn.get("fsynced") == b"survives kill -9"
        assert conn.get("kept") == b"across a clean stop"
        conn.close()
    finally:
        sup.stop_all()


def test_embedded_redis_refuses_a_data_dir_already_served(data_dir: Path) -> None:
    sup, _server = start_redis(data_dir)
    try:
        with pytest.raises(EmbeddedRedisError, match="another `bouncer up`"):
            redis_child(data_dir)
    finally:
        sup.stop_all()


def test_embedded_redis_refuses_a_socket_path_too_long(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="shorter BOUNCER_DATA_DIR"):
        redis_child(tmp_path / ("x" * 120))
