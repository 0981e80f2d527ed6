"""gunicorn's access log without secrets: Akismet clients may send their key in the query string (``?api_key=``,
``?key=``, as get-stats and usage-limit are called), and the default format logs the whole request line."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

# Query parameters whose value is a secret; compared without case.
SECRET_PARAMS = frozenset(
    {"api_key", "key", "token", "access_token", "password", "secret", "callback_secret", "csrf_token", "session"}
)
# Request headers an operator's --access-logformat could name (%({authorization}i)s ...): credentials, whole.
SECRET_HEADERS = frozenset({"authorization", "cookie", "x-csrftoken", "x-csrf-token", "proxy-authorization"})
_PARAM = re.compile(r"(?P<name>[^&=;?#]+)=(?P<value>[^&;#]*)")
_HOST_KEY = re.compile(r"^[A-Za-z0-9]{12}\.(?=[^.]+\.)")  # an Akismet key as the Host's first label (npm client)
REDACTED = "***"


def redact_query(query: str) -> str:
    """``query`` with the values of secret parameters replaced by ``***``."""

    def one(match: re.Match[str]) -> str:
        name = match["name"]
        return f"{name}={REDACTED}" if unquote_plus(name).strip().lower() in SECRET_PARAMS else match[0]

    return _PARAM.sub(one, query)


def redact_uri(uri: str) -> str:
    """A request target or URL with the values of secret query parameters replaced by ``***``."""
    path, sep, query = uri.partition("?")
    return path + sep + redact_query(query) if sep else uri


class RedactingLogger(Logger):
    """The default gunicorn logger, with secrets taken out of every access-log atom that can hold one."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        method, uri, protocol = environ["REQUEST_METHOD"], environ["RAW_URI"], environ["SERVER_PROTOCOL"]
        atoms["r"] = f"{method} {redact_uri(uri)} {protocol}"
        atoms["q"] = redact_query(atoms.get("q") or "")
        atoms["f"] = redact_uri(atoms.get("f") or "-")
        for name in SECRET_HEADERS:
            if f"{{{name}}}i" in atoms:
                atoms[f"{{{name}}}i"] = REDACTED
        if "{host}i" in atoms:
            atoms["{host}i"] = _HOST_KEY.sub(f"{REDACTED}.", atoms["{host}i"])
        return atoms
