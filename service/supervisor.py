"""A small process supervisor for ``bouncer up``: start children in order, restart crashes, stop on a signal.

Generic on purpose: it knows ``ChildSpec`` (name, argv, env, readiness check, tier) and ``RestartPolicy``,
nothing about Redis, gunicorn or Celery. Each child runs in its own process group, so a Ctrl-C in the terminal
reaches only the supervisor, which then stops the children in order (highest tier first, Redis last).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1
_FORCED_GRACE = 0.5


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process. ``tier``: higher tiers stop first; a tier stops concurrently."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0
    tier: int = 1


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a crashed child after exponential backoff; give up at ``max_crashes`` within ``window`` s."""

    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    max_crashes: int = 5
    window: float = 60.0
    stop_grace: float = 15.0


class SupervisorError(RuntimeError):
    """A child could not be started or became unready; the supervisor has already stopped the others."""


def _log_stderr(message: str) -> None:
    print(f"bouncer: {message}", file=sys.stderr, flush=True)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """On Linux a child gets SIGTERM when the supervisor dies (even by SIGKILL): nothing is left orphaned."""
    if not sys.platform.startswith("linux"):
        return None

    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only makes the call

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


class Supervisor:
    """``start(spec)`` each child in order, then ``run()`` until a signal or a give-up; ``run`` stops all."""

    def __init__(self, policy: RestartPolicy | None = None, log: Callable[[str], None] = _log_stderr) -> None:
        self.policy = policy or RestartPolicy()
        self.log = log
        self._children: list[_Child] = []
        self._stop_signal: int | None = None
        self._force = False
        self._previous_handlers: dict[int, Any] = {}

    # -- signals ---------------------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM/SIGHUP request a clean stop; a second one cuts the grace period short."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._force = True

    def request_stop(self) -> None:
        self._stop_signal = self._stop_signal or signal.SIGTERM

    @property
    def stopping(self) -> bool:
        return self._stop_signal is not None

    # -- starting --------------------------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> None:
        """Start one child and wait for its readiness check; raise SupervisorError if it dies or times out."""
        if self.stopping:
            raise SupervisorError(f"stopped before {spec.name} was started")
        child = _Child(spec)
        self._children.append(child)
        self._spawn(child)
        if spec.ready is None:
            return
        deadline = time.monotonic() + spec.ready_timeout
        while not spec.ready():
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                raise SupervisorError(f"{spec.name} {describe_exit(code)} while starting")
            if self.stopping:
                raise SupervisorError(f"stopped while {spec.name} was starting")
            if time.monotonic() > deadline:
                raise SupervisorError(f"{spec.name} was not ready after {spec.ready_timeout:g} s")
            time.sleep(0.05)

    def _spawn(self, child: _Child) -> None:
        env = dict(os.environ if child.spec.env is None else child.spec.env)
        child.process = subprocess.Popen(
            list(child.spec.argv),
            env=env,
            process_group=0,  # terminal signals go to the supervisor only; it decides the order
            preexec_fn=_die_with_parent(os.getpid()),
        )
        child.restart_at = None

    # -- running ---------------------------------------------------------------------------------------------

    def run(self, poll_interval: float = 0.1) -> int:
        """Supervise until a stop signal (exit 0) or a child crashing too often (exit 1); always stops all."""
        exit_code = 0
        try:
            while not self.stopping:
                if not self._check_children():
                    exit_code = 1
                    break
                time.sleep(poll_interval)
            if self._stop_signal is not None:
                name = signal.Signals(self._stop_signal).name
                self.log(f"{name} received, stopping; send it again to cut the grace period short")
        finally:
            self.stop_all()
        return exit_code

    def _check_children(self) -> bool:
        """Reap and schedule restarts; False when a child crashed too often and everything must come down."""
        now = time.monotonic()
        for child in self._children:
            if child.process is None:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self.log(f"restarting {child.spec.name}")
                    self._spawn(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            _kill_group(child.process.pid)  # leftovers of a dead parent (gunicorn workers, pool processes)
            child.crashes.append(now)
            while child.crashes and now - child.crashes[0] > self.policy.window:
                child.crashes.popleft()
            recent = len(child.crashes)
            if recent >= self.policy.max_crashes:
                self.log(
                    f"{child.spec.name} {describe_exit(code)}; it crashed {recent} times within "
                    f"{self.policy.window:.0f} s, giving up: stopping everything"
                )
                return False
            delay = min(self.policy.backoff_initial * 2 ** (recent - 1), self.policy.backoff_max)
            self.log(f"{child.spec.name} {describe_exit(code)} unexpectedly; restarting in {delay:.1f} s")
            child.restart_at = now + delay
        return True

    # -- stopping --------------------------------------------------------------------------------------------

    def stop_all(self) -> None:
        """SIGTERM each tier (highest first), wait up to the grace period, then SIGKILL what is left."""
        for tier in sorted({c.spec.tier for c in self._children}, reverse=True):
            members = [c for c in self._children if c.spec.tier == tier and c.process is not None]
            running = [c for c in members if c.restart_at is None and c.process and c.process.poll() is None]
            if running:
                self.log("stopping " + ", ".join(c.spec.name for c in running))
            for child in running:
                assert child.process is not None
                _signal(child.process.pid, signal.SIGTERM)
            started = time.monotonic()
            for child in running:
                assert child.process is not None
                # A second signal shortens the grace to a moment: enough for Redis to close its files.
                while child.process.poll() is None and time.monotonic() - started < self._grace():
                    time.sleep(0.05)
                if child.process.poll() is None:
                    self.log(f"{child.spec.name} did not stop in time; killing it")
                    _kill_group(child.process.pid)
                    child.process.wait()
            for child in members:
                if child.restart_at is None:  # just exited: leave none of its process group behind
                    assert child.process is not None
                    _kill_group(child.process.pid)
        self._children.clear()

    def _grace(self) -> float:
        return min(self.policy.stop_grace, _FORCED_GRACE) if self._force else self.policy.stop_grace


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
