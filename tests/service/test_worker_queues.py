"""Which queues a worker consumes: `bouncer worker` takes every queue unless told otherwise; retraining has a queue
of its own, so a deployment (and `bouncer up`) can keep minutes of training away from scoring."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from service import cli_run
from service.celery_setup import celery_config


class Exec(Exception):
    """Raised instead of replacing the test process with Celery."""


@pytest.fixture
def exec_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def fake_exec(argv: list[str]) -> None:
        seen.append(argv)
        raise Exec

    monkeypatch.setattr(cli_run, "_exec", fake_exec)
    return seen


def _queues(argv: list[str]) -> str:
    return argv[argv.index("--queues") + 1]


def test_retraining_is_routed_to_its_own_queue() -> None:
    routes = celery_config()["task_routes"]
    assert routes["bouncer.retrain"] == {"queue": "retrain"}
    assert routes["bouncer.score_comment"] == {"queue": "score"}


def test_a_plain_worker_consumes_every_queue(exec_argv: list[list[str]]) -> None:
    result = CliRunner().invoke(cli_run.worker, [])
    assert isinstance(result.exception, Exec)
    assert _queues(exec_argv[0]) == "score,default,callbacks,retrain"


def test_a_worker_can_be_given_some_queues(exec_argv: list[list[str]]) -> None:
    result = CliRunner().invoke(cli_run.worker, ["--queues", "retrain", "--concurrency", "1"])
    assert isinstance(result.exception, Exec)
    argv = exec_argv[0]
    assert _queues(argv) == "retrain" and argv[argv.index("--concurrency") + 1] == "1"

    result = CliRunner().invoke(cli_run.worker, ["--queues", "score,nope"])
    assert result.exit_code == 2 and "nope" in result.output and not exec_argv[1:]


def test_up_splits_scoring_from_retraining() -> None:
    cfg = cli_run.settings()
    retrain = cli_run.retrain_worker_argv(cfg)
    assert _queues(retrain) == "retrain"
    assert retrain[retrain.index("--concurrency") + 1] == "1"
    assert retrain[retrain.index("--max-tasks-per-child") + 1] == "1"  # training memory goes back after each run
    assert set(cli_run.SCORING_QUEUES) | set(cli_run.RETRAIN_QUEUES) == set(cli_run.WORKER_QUEUES)
    assert not set(cli_run.SCORING_QUEUES) & set(cli_run.RETRAIN_QUEUES)


def test_ready_counts_a_worker_on_the_score_queue(worker: Any, client: Any) -> None:
    answer = client.get("/api/v1/ready")
    assert answer.get_json()["checks"]["worker"] == "ok", answer.get_json()


def test_ready_is_not_fooled_by_a_retrain_only_worker(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which workers answer is Celery's broadcast; what counts is whether one of them consumes the score queue."""
    from service.api import views

    class Inspect:
        def __init__(self, replies: dict[str, list[dict[str, str]]]) -> None:
            self.replies = replies

        def active_queues(self) -> dict[str, list[dict[str, str]]]:
            return self.replies

    control = app.extensions["celery"].control
    with app.app_context():
        monkeypatch.setattr(control, "inspect", lambda timeout: Inspect({"retrain@h": [{"name": "retrain"}]}))
        assert not views._scoring_worker_alive()
        monkeypatch.setattr(control, "inspect", lambda timeout: Inspect({"celery@h": [{"name": "score"}]}))
        assert views._scoring_worker_alive()
