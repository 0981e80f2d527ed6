"""One configuration loader: every setting is one ``BOUNCER_*`` environment variable with a coercer and a default.

A TOML file named by ``BOUNCER_CONFIG`` may add values; the environment wins over the file. Unknown ``BOUNCER_*``
keys produce a warning instead of silence, and a bad value stops the program with a message naming the variable.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
import warnings
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from limits import parse_many


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false")


def _bind(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8000")
    return raw


def _database_url(raw: str) -> str:
    if not raw.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://", "postgres://")):
        raise ValueError("expected a sqlite:// or postgresql:// URL")
    try:
        urlsplit(raw).port  # noqa: B018  # raises on a port that is not a number in 0-65535 (a traceback later)
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://") :]
    if raw.startswith("postgresql://"):
        raw = "postgresql+psycopg://" + raw[len("postgresql://") :]
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("expected unix:///path/to/redis.sock[?db=N]")
        db = parse_qs(parts.query).get("db", ["0"])[0]
    else:
        db = parts.path.strip("/") or "0"
    if not (db.isascii() and db.isdigit()):  # int() also reads '٣'; redis-py does not
        raise ValueError(f"the database number must be an integer ≥ 0, found {db!r}")
    return raw


def _rate_limit(raw: str) -> str:
    """A flask-limiter rate such as ``1200/minute`` or ``10 per minute;100/hour``: a typo would switch it off."""
    try:
        limits = parse_many(raw)
    except ValueError as exc:
        raise ValueError(f"{exc}; expected e.g. 1200/minute or 10 per minute;100/hour") from None
    if not limits or any(limit.amount <= 0 for limit in limits):
        raise ValueError("expected a positive count, e.g. 1200/minute")
    return raw


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected an integer ≥ 0")
    return value


SECRET_KEY_MIN_LENGTH = 32  # a short key can be guessed offline from one signed session cookie


def _secret_key(raw: str) -> str:
    """The key signing sessions, CSRF tokens and erased e-mails: blank or short, a signature could be forged."""
    if not raw.strip():
        raise ValueError("expected a secret, not only white space (unset, one is generated into the data dir)")
    if len(raw.strip()) < SECRET_KEY_MIN_LENGTH:
        raise ValueError(
            f"expected at least {SECRET_KEY_MIN_LENGTH} characters, found {len(raw.strip())} "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(48))' makes one; unset, one is generated)"
        )
    return raw


_SECRET_SETTINGS = frozenset({"BOUNCER_SECRET_KEY"})
_URL_SETTINGS = frozenset({"BOUNCER_DATABASE_URL", "BOUNCER_REDIS_URL"})
_PASSWORD_PARAMS = frozenset({"password", "pass", "passwd", "pwd"})


def url_without_password(url: str) -> str:
    """``url`` to print or log: its password (in the user part or a ``password=`` query parameter) as ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable (a bad port): hide everything between "//" and "@"
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{name}=***" if name.lower() in _PASSWORD_PARAMS else item
        for item in parts.query.split("&")
        if item
        for name in [item.partition("=")[0]]
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # not geturl(): it drops the empty host of sqlite:////abs/path and unix:///path
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def _shown(key: str, value: str) -> str:
    """A setting's value as an error message may show it: never a secret or a password."""
    if key in _SECRET_SETTINGS:
        return "<hidden>"
    return repr(url_without_password(value) if key in _URL_SETTINGS else value)


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    """Validated settings. Field names map to ``BOUNCER_<NAME>``; ``metadata['coerce']`` parses the raw string."""

    data_dir: Path = field(default=Path("var"), metadata={"coerce": _path})
    database_url: str = field(default="", metadata={"coerce": _database_url})
    redis_url: str = field(default="", metadata={"coerce": _redis_url})
    bind: str = field(default="127.0.0.1:8000", metadata={"coerce": _bind})
    secret_key: str = field(default="", metadata={"coerce": _secret_key})
    models_dir: Path = field(default=Path(""), metadata={"coerce": _path})
    web_workers: int = field(default=2, metadata={"coerce": _positive_int})
    web_threads: int = field(default=16, metadata={"coerce": _positive_int})
    worker_concurrency: int = field(default=2, metadata={"coerce": _positive_int})
    wait_default_ms: int = field(default=2000, metadata={"coerce": _non_negative_int})
    wait_max_ms: int = field(default=10000, metadata={"coerce": _non_negative_int})
    akismet_wait_ms: int = field(default=800, metadata={"coerce": _non_negative_int})
    sweep_after_seconds: int = field(default=30, metadata={"coerce": _positive_int})
    sweep_interval_seconds: int = field(default=15, metadata={"coerce": _positive_int})
    score_max_attempts: int = field(default=3, metadata={"coerce": _positive_int})
    # How long scoring of a comment may keep failing, no one to blame (a broken model), before it is held.
    score_give_up_seconds: int = field(default=3600, metadata={"coerce": _positive_int})
    callback_max_attempts: int = field(default=8, metadata={"coerce": _positive_int})
    callback_timeout_seconds: int = field(default=5, metadata={"coerce": _positive_int})
    callback_allow_private: bool = field(default=False, metadata={"coerce": _bool})
    api_rate_limit: str = field(default="1200/minute", metadata={"coerce": _rate_limit})
    login_rate_limit: str = field(default="10/minute", metadata={"coerce": _rate_limit})
    max_body_bytes: int = field(default=64 * 1024, metadata={"coerce": _positive_int})
    max_content_chars: int = field(default=32_000, metadata={"coerce": _positive_int})
    secure_cookies: bool = field(default=False, metadata={"coerce": _bool})
    # Reverse proxies in front of the web that append the client's address to X-Forwarded-For (0: none; app.py).
    trusted_proxies: int = field(default=0, metadata={"coerce": _non_negative_int})
    retrain_min_new_labels: int = field(default=50, metadata={"coerce": _non_negative_int})
    # Data retention in days (service.retention); 0 keeps for ever.
    retain_rejected_days: int = field(default=30, metadata={"coerce": _non_negative_int})
    retain_personal_data_days: int = field(default=90, metadata={"coerce": _non_negative_int})
    retain_callbacks_days: int = field(default=30, metadata={"coerce": _non_negative_int})
    shared_data_dir: Path = field(default=Path(""), metadata={"coerce": _path})
    log_level: str = field(default="INFO", metadata={"coerce": _log_level})

    @property
    def embedded_redis(self) -> bool:
        """True when no external Redis was configured and Bouncer runs its own on a unix socket."""
        return self.redis_url == self.embedded_redis_url

    @property
    def embedded_redis_url(self) -> str:
        return f"unix://{self.data_dir / 'redis.sock'}"

    @property
    def redis_base_db(self) -> int:
        """The database number in BOUNCER_REDIS_URL; each concern's database is numbered from it."""
        parts = urlsplit(self.redis_url)
        if parts.scheme == "unix":
            return int(parse_qs(parts.query).get("db", ["0"])[0])
        return int(parts.path.strip("/") or 0)

    def redis_url_for(self, db: int) -> str:
        """The Redis URL for one concern; concerns are numbered in ``service.redis_bus``."""
        parts = urlsplit(self.redis_url)
        number = self.redis_base_db + db
        if parts.scheme == "unix":
            query = parse_qs(parts.query)
            query["db"] = [str(number)]
            return f"unix://{parts.path}?{urlencode(query, doseq=True)}"
        return parts._replace(path=f"/{number}").geturl()

    def celery_broker_url(self, db: int) -> str:
        """Kombu spells a unix-socket Redis as ``redis+socket://`` with ``virtual_host`` for the database."""
        parts = urlsplit(self.redis_url)
        number = self.redis_base_db + db
        if parts.scheme == "unix":
            return f"redis+socket://{parts.path}?virtual_host={number}"
        return parts._replace(path=f"/{number}").geturl()


ENV_PREFIX = "BOUNCER_"
TEST_PREFIX = "BOUNCER_TEST_"  # the test suite's own settings (tests/conftest.py), not the service's
_KNOWN = {ENV_PREFIX + f.name.upper() for f in fields(Settings)} | {"BOUNCER_CONFIG"}


def _raw_values(environ: dict[str, str], origin: dict[str, str] | None = None) -> dict[str, str]:
    """The raw strings by variable name; ``origin`` receives where a value from the config file was set."""
    raw: dict[str, str] = {}
    origin = {} if origin is None else origin
    config_file = environ.get("BOUNCER_CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data: dict[str, Any] = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"BOUNCER_CONFIG={config_file}: {exc}") from exc
        except UnicodeDecodeError as exc:  # tomllib decodes the bytes itself and lets this through
            raise ConfigError(
                f"BOUNCER_CONFIG={config_file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        for key, value in data.items():
            env_key = ENV_PREFIX + key.upper()
            if env_key not in _KNOWN or env_key == "BOUNCER_CONFIG":
                warnings.warn(f"unknown setting {key!r} in {config_file} is ignored", stacklevel=3)
                continue
            raw[env_key] = str(value).lower() if isinstance(value, bool) else str(value)
            origin[env_key] = f"{key} in {config_file}"
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and not key.startswith(TEST_PREFIX):
            if key not in _KNOWN:
                warnings.warn(f"unknown setting {key} is ignored", stacklevel=3)
                continue
            raw[key] = value
            origin.pop(key, None)
    return raw


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read, coerce and validate the settings; fill derived defaults (database, Redis, models dir, secret)."""
    origin: dict[str, str] = {}
    raw = _raw_values(dict(os.environ if environ is None else environ), origin)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = ENV_PREFIX + f.name.upper()
        if key in raw and raw[key] != "":
            try:
                values[f.name] = f.metadata["coerce"](raw[key])
            except ValueError as exc:
                where = f" (set as {origin[key]})" if key in origin else ""
                raise ConfigError(f"{key}={_shown(key, raw[key])}{where} is not valid: {exc}") from exc
    settings = Settings(**values)
    data_dir = settings.data_dir if settings.data_dir.is_absolute() else settings.data_dir.resolve()
    derived: dict[str, Any] = {"data_dir": data_dir}
    if not settings.database_url:
        derived["database_url"] = f"sqlite:///{data_dir / 'bouncer.db'}"
    if not settings.redis_url:
        derived["redis_url"] = f"unix://{data_dir / 'redis.sock'}"
    # Unset, not "equal to the working directory": BOUNCER_MODELS_DIR=. is a choice like any other path.
    if "models_dir" not in values:
        derived["models_dir"] = data_dir / "models"
    if "shared_data_dir" not in values:
        derived["shared_data_dir"] = Path(__file__).resolve().parents[2] / "shared" / "data"
    if settings.wait_default_ms > settings.wait_max_ms:
        raise ConfigError("BOUNCER_WAIT_DEFAULT_MS must not exceed BOUNCER_WAIT_MAX_MS")
    settings = Settings(**{**{f.name: getattr(settings, f.name) for f in fields(Settings)}, **derived})
    if not settings.secret_key:
        settings = Settings(
            **{
                **{f.name: getattr(settings, f.name) for f in fields(Settings)},
                "secret_key": _stored_secret(data_dir),
            }
        )
    return settings


def _stored_secret(data_dir: Path) -> str:
    """Generate the secret key once and keep it in the data dir (0600), so sessions survive restarts."""
    path = data_dir / "secret_key"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if not secret:  # cut short between creating and writing it
            raise ConfigError(
                f"{path} is empty: delete it to have a new secret key generated, or set BOUNCER_SECRET_KEY"
            ) from None
        return secret
    except OSError as exc:
        raise ConfigError(
            f"BOUNCER_DATA_DIR={str(data_dir)!r} is not usable: {exc.strerror} "
            "(it keeps the generated secret key; or set BOUNCER_SECRET_KEY)"
        ) from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@cache
def settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
