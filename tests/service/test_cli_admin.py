"""``bouncer db``, ``bouncer sites`` and ``bouncer users`` as an operator runs them: one process per command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug.security import check_password_hash

REPO = Path(__file__).resolve().parents[2]


class Bouncer:
    """Runs ``bouncer ...`` in a fresh process against its own data dir (SQLite), as a shell would."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")}
        self.env["BOUNCER_DATA_DIR"] = str(data_dir)

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            cwd=REPO,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def rows(self, query: str) -> list[tuple]:
        with sqlite3.connect(self.data_dir / "bouncer.db") as conn:
            return conn.execute(query).fetchall()


@pytest.fixture
def bouncer(tmp_path: Path) -> Bouncer:
    return Bouncer(tmp_path / "var")


def test_commands_before_the_schema_exists_say_to_upgrade(bouncer: Bouncer) -> None:
    for args in (("sites", "create", "--name", "Blog", "--url", "https://blog.example"), ("sites", "list")):
        result = bouncer(*args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip() == "Error: database error: no such table: sites (run `bouncer db upgrade` first)"
    result = bouncer("users", "create", "--email", "a@example.org", "--role", "admin")
    assert result.returncode == 1 and "run `bouncer db upgrade` first" in result.stderr, result.stderr


def test_purge_before_the_schema_exists_says_to_upgrade_and_after_prints_json(bouncer: Bouncer) -> None:
    result = bouncer("purge", "--dry-run")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "database error: no such table" in result.stderr and "run `bouncer db upgrade` first" in result.stderr
    assert bouncer("db", "upgrade").returncode == 0
    result = bouncer("purge")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {k: out[k] for k in ("dry_run", "rejected_comments", "personal_data", "callback_deliveries")} == {
        "dry_run": False,
        "rejected_comments": 0,
        "personal_data": 0,
        "callback_deliveries": 0,
    }


def test_sites_create_checks_what_the_admin_console_checks(bouncer: Bouncer) -> None:
    assert bouncer("db", "upgrade").returncode == 0
    for args, message in [
        (("--name", "Blog", "--url", "blog.example"), "the site URL must be an http(s) URL"),
        (("--name", "Blog", "--url", "https://blog.example", "--callback-url", "javascript:alert(1)"), "callback URL"),
        (("--name", "Blog", "--url", "https://blog.example", "--callback-url", "https://"), "callback URL"),
        (("--name", "B" * 201, "--url", "https://blog.example"), "a name (up to 200 characters) is required"),
        (("--name", "  ", "--url", "https://blog.example"), "a name (up to 200 characters) is required"),
    ]:
        result = bouncer("sites", "create", *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr
    assert bouncer.rows("SELECT count(*) FROM sites") == [(0,)]  # nothing half-stored

    result = bouncer(
        "sites",
        "create",
        "--name",
        " My blog ",
        "--url",
        "https://blog.example",
        "--callback-url",
        "https://b.example/cb",
    )
    assert result.returncode == 0, result.stderr
    site = json.loads(result.stdout)
    assert {"id", "api_key", "akismet_key", "callback_secret"} <= set(site) and len(site["akismet_key"]) == 12
    assert (site["name"], site["callback_url"]) == ("My blog", "https://b.example/cb")
    stored = bouncer.rows("SELECT api_key_hash, akismet_key_hash FROM sites")
    assert site["api_key"] not in stored[0] and site["akismet_key"] not in stored[0]  # keys are stored hashed


def test_sites_deactivate_and_activate(bouncer: Bouncer) -> None:
    """An operator without the admin console stops a site: its pending callbacks are cancelled, not sent."""
    from sqlalchemy import create_engine, insert

    from service.models import CallbackDelivery, Comment

    assert bouncer("db", "upgrade").returncode == 0
    site = json.loads(bouncer("sites", "create", "--name", "Blog", "--url", "https://blog.example").stdout)
    engine = create_engine(f"sqlite:///{bouncer.data_dir / 'bouncer.db'}")
    with engine.begin() as conn:  # a held comment whose callback waits for its next try
        comment = conn.execute(insert(Comment).values(site_id=site["id"], content="hi").returning(Comment.id)).scalar()
        conn.execute(insert(CallbackDelivery).values(comment_id=comment, site_id=site["id"]))
    engine.dispose()
    off = bouncer("sites", "deactivate", str(site["id"]))
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout) == {"id": site["id"], "active": False, "callbacks_cancelled": 1}
    assert bouncer.rows("SELECT status, last_error FROM callback_deliveries") == [("failed", "site deactivated")]
    assert json.loads(bouncer("sites", "list").stdout)["active"] is False
    on = bouncer("sites", "activate", str(site["id"]))
    assert json.loads(on.stdout) == {"id": site["id"], "active": True, "callbacks_cancelled": 0}
    assert bouncer.rows("SELECT active FROM sites") == [(1,)]
    assert bouncer.rows("SELECT status FROM callback_deliveries") == [("failed",)]  # not sent after all
    missing = bouncer("sites", "deactivate", "424242")
    assert missing.returncode == 1 and "no site with id 424242" in missing.stderr


def test_users_create_password_from_stdin_or_generated_once(bouncer: Bouncer) -> None:
    assert bouncer("db", "upgrade").returncode == 0
    result = bouncer("users", "create", "--email", "Mod@Example.org", "--role", "moderator", "--password-stdin",
                     stdin="correct horse battery\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "password" not in json.loads(result.stdout) and "correct horse" not in result.stdout
    result = bouncer("users", "create", "--email", "admin@example.org", "--role", "admin")
    assert result.returncode == 0, result.stderr
    generated = json.loads(result.stdout)["password"]
    assert len(generated) >= 10
    hashes = dict(bouncer.rows("SELECT email, password_hash FROM users"))
    assert check_password_hash(hashes["mod@example.org"], "correct horse battery")
    assert check_password_hash(hashes["admin@example.org"], generated) and generated not in hashes["admin@example.org"]
    short = bouncer("users", "create", "--email", "x@example.org", "--role", "admin", "--password-stdin", stdin="")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr, short.stderr


def test_users_create_refuses_what_is_not_an_e_mail_address(bouncer: Bouncer) -> None:
    """Any text with an "@" used to become a login; the check is the one the admin form's e-mail field makes."""
    assert bouncer("db", "upgrade").returncode == 0
    for email in ("a@", "@example.org", "a b@example.org", "a@b@example.org", "a@exa_mple.org", "a@example..org"):
        result = bouncer("users", "create", "--email", email, "--role", "admin")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        expected = f"Error: '{email}' is not an e-mail address (e.g. moderator@blog.example)"
        assert result.stderr.strip() == expected, result.stderr
    assert bouncer.rows("SELECT count(*) FROM users") == [(0,)]
    for email in (" First.Last+tag@Sub.Example.org ", "admin@localhost"):
        assert bouncer("users", "create", "--email", email, "--role", "admin").returncode == 0, email
    stored = bouncer.rows("SELECT email FROM users ORDER BY id")
    assert stored == [("first.last+tag@sub.example.org",), ("admin@localhost",)]


def test_an_unreachable_database_is_a_message(bouncer: Bouncer) -> None:
    bouncer.env["BOUNCER_DATABASE_URL"] = "postgresql://bouncer@127.0.0.1:1/bouncer"  # nothing listens on port 1
    for args in (("db", "upgrade"), ("sites", "list")):
        result = bouncer(*args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("Error: database error: connection failed"), result.stderr


@pytest.mark.parametrize("bad", ["١٢", str(2**63), "0", "+1", " 1", "1e3"])
def test_site_ids_that_cannot_name_a_row_are_usage_errors(bouncer: Bouncer, bad: str) -> None:
    assert bouncer("db", "upgrade").returncode == 0
    for args in (
        ("sites", "rotate-keys", bad),
        ("users", "create", "--email", "m@example.org", "--role", "moderator", "--site", bad),
        ("labels", "import", "--site", bad, __file__),
    ):
        result = bouncer(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "is not an id (a whole number from 1 to 2**63-1)" in result.stderr
    assert bouncer("users", "create", "--email", "m@example.org", "--role", "moderator", "--site", "7").stderr == (
        "Error: no site with id 7\n"
    )
    assert bouncer.rows("SELECT count(*) FROM users") == [(0,)]


def test_commands_import_only_their_own_module() -> None:
    """`bouncer sites …` does not import scikit-learn (the model commands' module): it cost every admin command
    about three seconds before it started. The model commands still load, and --help still lists every command."""
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from service.cli import main\n"
        "runner = CliRunner()\n"
        "assert runner.invoke(main, ['sites', '--help']).exit_code == 0\n"
        "print('sites', 'sklearn' in sys.modules)\n"
        "assert runner.invoke(main, ['models', '--help']).exit_code == 0\n"
        "print('models', 'sklearn' in sys.modules)\n"
        "print(runner.invoke(main, ['--help']).output)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[:2] == ["sites False", "models True"], result.stdout
    listed = {line.split()[0] for line in lines[2:] if line.startswith("  ") and line.split()}
    assert listed >= {"up", "web", "sites", "users", "personal-data", "train", "evaluate", "models"}, listed
