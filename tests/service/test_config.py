"""Configuration: every bad value stops the program with a message naming the variable; unknown keys warn."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from service.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"BOUNCER_DATA_DIR": str(tmp_path / "var"), **{f"BOUNCER_{k.upper()}": v for k, v in values.items()}}


def test_defaults_and_valid_values(tmp_path: Path) -> None:
    cfg = load_settings(
        env(
            tmp_path,
            api_rate_limit="100 per minute;2000/hour",
            login_rate_limit="5/minute",
            log_level="warning",
            redis_url="redis://127.0.0.1:6393/4",
        )
    )
    assert (cfg.api_rate_limit, cfg.login_rate_limit, cfg.log_level) == (
        "100 per minute;2000/hour",
        "5/minute",
        "WARNING",
    )
    assert cfg.redis_base_db == 4 and cfg.redis_url_for(3) == "redis://127.0.0.1:6393/7"
    assert load_settings(env(tmp_path)).redis_url == f"unix://{tmp_path / 'var' / 'redis.sock'}"
    assert load_settings(env(tmp_path)).score_max_attempts == 3
    assert load_settings(env(tmp_path, score_max_attempts="5")).score_max_attempts == 5
    assert load_settings(env(tmp_path)).score_give_up_seconds == 3600
    assert load_settings(env(tmp_path, score_give_up_seconds="600")).score_give_up_seconds == 600


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        # a typo in a rate limit made flask-limiter log an error per request and not limit at all (login brute force)
        ("login_rate_limit", "10/fortnight", "no granularity matched for fortnight"),
        ("api_rate_limit", "lots", "couldn't parse rate limit string 'lots'"),
        ("api_rate_limit", "0/minute", "expected a positive count"),
        # logging.basicConfig(level="VERBOSE") raised in create_app, in every gunicorn worker
        ("log_level", "verbose", "expected one of DEBUG, INFO, WARNING"),
        # the database number was only parsed when a Redis client was first made
        ("redis_url", "redis://127.0.0.1:6379/abc", "the database number must be an integer"),
        ("redis_url", "unix:///tmp/redis.sock?db=x", "the database number must be an integer"),
        ("redis_url", "redis://127.0.0.1:99999/0", "bad port"),
        # int() reads Arabic-Indic digits as 3; redis-py's URL parser does not
        ("redis_url", "redis://127.0.0.1:6379/٣", "the database number must be an integer"),
        ("bind", "127.0.0.1:٨٠٠٠", "expected HOST:PORT"),
        # 0 attempts would hold every comment without ever scoring one
        ("score_max_attempts", "0", "expected a positive integer"),
        # 0 seconds would hold a comment as soon as its scoring failed a few times in a row, however briefly
        ("score_give_up_seconds", "0", "expected a positive integer"),
        # a negative retention would put the cut-off in the future: every automatic reject deleted at once
        ("retain_rejected_days", "-1", "expected an integer ≥ 0"),
        ("retain_personal_data_days", "90d", "invalid literal for int()"),
        # a blank key signed every session and CSRF token with spaces: anyone could forge an admin's session
        ("secret_key", " ", "not only white space"),
        ("secret_key", "\t\n", "not only white space"),
        # one signed session cookie lets anyone guess a short key offline, then sign sessions of their own
        ("secret_key", "hunter2", "expected at least 32 characters, found 7"),
        ("secret_key", " " + "k" * 31 + " ", "expected at least 32 characters, found 31"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^BOUNCER_{name.upper()}=") as err:
        load_settings(env(tmp_path, **{name: value}))
    assert message in str(err.value)


def test_config_file_values_are_validated_and_named_by_file(tmp_path: Path) -> None:
    config = tmp_path / "bouncer.toml"
    config.write_text('web_workers = 3\nlogin_rate_limit = "3/fortnight"\n', encoding="utf-8")
    with pytest.raises(
        ConfigError, match=f"BOUNCER_LOGIN_RATE_LIMIT='3/fortnight' \\(set as login_rate_limit in {config}\\)"
    ):
        load_settings(env(tmp_path, config=str(config)))
    # the environment wins over the file
    cfg = load_settings(env(tmp_path, config=str(config), login_rate_limit="3/minute"))
    assert (cfg.web_workers, cfg.login_rate_limit) == (3, "3/minute")


def test_config_file_in_another_encoding_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bouncer.toml"
    config.write_bytes('bind = "127.0.0.1:8000"  # caf\u00e9\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=f"BOUNCER_CONFIG={config}: not UTF-8 text"):
        load_settings(env(tmp_path, config=str(config)))


def test_unknown_keys_warn(tmp_path: Path) -> None:
    config = tmp_path / "bouncer.toml"
    config.write_text('web_wokers = 3\nconfig = "other.toml"\n', encoding="utf-8")
    with pytest.warns(UserWarning) as warned:
        load_settings({**env(tmp_path, config=str(config)), "BOUNCER_BIDN": "x"})
    messages = sorted(str(w.message) for w in warned)
    assert messages == [
        "unknown setting 'config' in " + str(config) + " is ignored",
        "unknown setting 'web_wokers' in " + str(config) + " is ignored",
        "unknown setting BOUNCER_BIDN is ignored",
    ]


def test_models_and_shared_data_dir_may_be_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set to the working directory, they were taken for unset: the registry silently moved to <data dir>/models."""
    monkeypatch.chdir(tmp_path)
    for value in (".", str(tmp_path)):
        cfg = load_settings(env(tmp_path, models_dir=value, shared_data_dir=value))
        assert (cfg.models_dir, cfg.shared_data_dir) == (tmp_path, tmp_path)
    cfg = load_settings(env(tmp_path))
    assert cfg.models_dir == tmp_path / "var" / "models"
    assert cfg.shared_data_dir == REPO.parent / "shared" / "data"


def test_secret_key_is_generated_once_and_an_empty_stored_one_is_refused(tmp_path: Path) -> None:
    generated = load_settings(env(tmp_path)).secret_key
    assert len(generated) >= 32 and load_settings(env(tmp_path)).secret_key == generated
    (tmp_path / "var" / "secret_key").write_text("\n")
    with pytest.raises(ConfigError, match="secret_key is empty: delete it"):
        load_settings(env(tmp_path))


def test_unusable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="^BOUNCER_DATA_DIR=.* is not usable"):
        load_settings({"BOUNCER_DATA_DIR": str(blocker / "var")})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BOUNCER_LOG_LEVEL", "verbose"), ("BOUNCER_DATA_DIR", "/proc/bouncer-var"), ("BOUNCER_CONFIG", "latin1")],
)
def test_cli_reports_configuration_errors_without_a_traceback(tmp_path: Path, variable: str, value: str) -> None:
    if value == "latin1":
        value = str(tmp_path / "bouncer.toml")
        Path(value).write_bytes(b"log_level = 'info' # \xe9\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BOUNCER_")}
    environ |= {"BOUNCER_DATA_DIR": str(tmp_path / "var"), variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "models", "list", "--kind", "spam"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"Error: configuration error: {variable}="), result.stderr
    assert "Traceback" not in result.stderr


def _readme_configuration_table() -> dict[str, str]:
    """The README's Configuration table: variable name → the default it documents."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`BOUNCER_"):
            continue
        names = [name.strip().strip("`") for name in cells[0].split(" / ")]
        defaults = [value.strip().strip("`") for value in cells[1].split(" / ")]
        if len(defaults) != len(names):  # one default for a pair of variables
            defaults = [cells[1].strip("`")] * len(names)
        documented.update(zip(names, defaults, strict=True))
    return documented


def test_readme_configuration_table_lists_every_setting_with_its_default() -> None:
    """Users configure Bouncer from that table: a variable config.py reads but the table leaves out is a setting
    nobody finds, and one the table names but config.py does not read is warned about and ignored."""
    documented = _readme_configuration_table()
    read = {"BOUNCER_" + f.name.upper(): f.default for f in fields(Settings)}
    assert documented.keys() == read.keys()
    for name, default in read.items():
        if isinstance(default, bool):
            assert documented[name] == str(default).lower(), name
        elif isinstance(default, int | str) and default != "":
            assert documented[name] == str(default), name
    assert Path(documented["BOUNCER_DATA_DIR"]) == read["BOUNCER_DATA_DIR"]


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        # a key one character short is still the operator's secret: the message said it back, into logs
        ("secret_key", "s3cret-" + "k" * 24, "s3cret-"),
        ("redis_url", "redis://:hunter2pw@redis:63790000/0", "hunter2pw"),
        ("redis_url", "redis://redis:6379/x?password=hunter2pw", "hunter2pw"),
        ("database_url", "mysql://bouncer:hunter2pw@db/bouncer", "hunter2pw"),
        # a port that is no number was a traceback from SQLAlchemy at the first connection, not a config error
        ("database_url", "postgresql://bouncer:hunter2pw@db:notaport/bouncer", "hunter2pw"),
    ],
)
def test_bad_values_do_not_show_secrets(tmp_path: Path, name: str, value: str, secret: str) -> None:
    """A config error is printed and logged: it names the variable, never the secret key or a URL's password."""
    with pytest.raises(ConfigError, match=f"^BOUNCER_{name.upper()}=") as err:
        load_settings(env(tmp_path, **{name: value}))
    assert secret not in str(err.value)
    if name != "secret_key":  # the rest of a URL stays, to tell which one is wrong
        assert "***" in str(err.value)


def test_url_without_password() -> None:
    from service.config import url_without_password

    assert url_without_password("redis://:s3cr%40t@h:6379/0") == "redis://:***@h:6379/0"
    assert url_without_password("postgresql+psycopg://bob:pw@db/b?sslmode=require&password=zz") == (
        "postgresql+psycopg://bob:***@db/b?sslmode=require&password=***"
    )
    for unchanged in ("sqlite:////tmp/x.db", "unix:///tmp/r.sock?db=2", "redis://user@h/1"):
        assert url_without_password(unchanged) == unchanged
