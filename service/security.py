"""Keys and signatures: API keys are random and stored as sha256; callbacks are signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

_AKISMET_ALPHABET = string.ascii_lowercase + string.digits


def hash_key(key: str) -> str:
    """Keys are high-entropy random strings, so a plain sha256 is a safe, indexable hash."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return "bk_" + secrets.token_urlsafe(32)


def new_akismet_key() -> str:
    """Akismet keys are exactly 12 characters (the WordPress plugin refuses any other length)."""
    return "".join(secrets.choice(_AKISMET_ALPHABET) for _ in range(12))


def new_callback_secret() -> str:
    return secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The callback signature: hex HMAC-SHA256 over ``"<timestamp>." + body``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def verify(secret: str, timestamp: int, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
