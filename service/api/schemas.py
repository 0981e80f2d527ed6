"""Request bodies of the native API, validated with pydantic: types checked, sizes capped, unknown keys refused."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from service.config import settings
from service.ips import ZoneIdError, canonical_ip

MAX_META_BYTES = 4096
# Deep nesting fits in 4 KiB ("[[[[..." ) but every JSON encode/decode of it recurses: stored at depth 900 it could
# not be read back in a worker's deeper stack (RecursionError) and would never be decided.
MAX_META_DEPTH = 16
# "\ud800" is valid JSON but no character: a lone UTF-16 surrogate cannot be encoded as UTF-8, so neither database
# (nor Redis, nor a callback) can take it, and the insert failed with a 500.
_SURROGATE = re.compile("[\ud800-\udfff]")
LONE_SURROGATE = "must not contain a lone UTF-16 surrogate (\\ud800-\\udfff without its pair): it is not a character"


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0, ``{}`` is 1), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _surrogate_path(value: Any) -> str | None:
    """Where the first lone surrogate in a JSON value is (``"a.0.b"``, ``""`` for the value itself), else None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"{path}.<key>".lstrip(".")  # the key itself cannot be shown
                stack.append((child, f"{path}.{key}".lstrip(".")))
        elif isinstance(item, list):
            stack.extend((child, f"{path}.{i}".lstrip(".")) for i, child in enumerate(item))
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_lone_surrogate(cls, value: Any) -> Any:
        # Before pydantic's own str check, which lets some through and refuses others as "not a valid string".
        if isinstance(value, str) and _SURROGATE.search(value):
            raise ValueError(LONE_SURROGATE)
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL refuses NUL in text; refuse it up front with a clear error instead of a 500.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


def _in_utc(value: datetime) -> datetime:
    """An aware time converted to UTC here, so a value at the calendar's edge is a 422 and not an OverflowError."""
    if value.tzinfo is None:  # stored as UTC, as the API documents
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        raise ValueError("the time is out of range once converted to UTC") from exc


UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]


class Author(_Strict):
    name: str = Field(default="", max_length=500)
    email: str = Field(default="", max_length=320)
    url: str = Field(default="", max_length=2000)
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=1000)

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        """Stored canonical (``::ffff:1.2.3.4`` as ``1.2.3.4``), so the IP rules and stream checks match it."""
        if not value.strip():
            return ""
        try:
            return canonical_ip(value)
        except ZoneIdError:
            raise
        except ValueError as exc:
            raise ValueError("not an IPv4 or IPv6 address") from exc


class Post(_Strict):
    url: str = Field(default="", max_length=2000)
    title: str = Field(default="", max_length=1000)
    excerpt: str = Field(default="", max_length=5000)
    published_at: UtcDatetime | None = None


class CommentIn(_Strict):
    content: str  # at most BOUNCER_MAX_CONTENT_CHARS characters (checked below: the limit is a setting)
    external_id: str | None = Field(default=None, min_length=1, max_length=200)
    author: Author = Field(default_factory=Author)
    post: Post = Field(default_factory=Post)
    type: str = Field(default="comment", max_length=40)
    parent_external_id: str | None = Field(default=None, max_length=200)
    lang: str = Field(default="", max_length=40)
    created_at: UtcDatetime | None = None
    referrer: str = Field(default="", max_length=2000)
    honeypot: str = Field(default="", max_length=1000)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("content")
    @classmethod
    def _content_length(cls, value: str) -> str:
        limit = settings().max_content_chars
        if len(value) > limit:  # the same error pydantic's max_length gives, so both APIs report it alike
            raise PydanticCustomError(
                "string_too_long", "String should have at most {max_length} characters", {"max_length": limit}
            )
        return value

    @field_validator("meta")
    @classmethod
    def _meta_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _depth(value) > MAX_META_DEPTH:
            raise ValueError(f"meta must be nested at most {MAX_META_DEPTH} levels deep")
        where = _surrogate_path(value)
        if where is not None:
            raise ValueError(f"meta.{where} {LONE_SURROGATE}")
        if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > MAX_META_BYTES:
            raise ValueError(f"meta must be at most {MAX_META_BYTES} bytes as JSON")
        return value


class FeedbackIn(_Strict):
    label: Literal["spam", "ham", "abuse"]


class PersonalDataIn(_Strict):
    """Whose personal data: the commenter's e-mail address, as the blog sent it with their comments."""

    email: str = Field(max_length=320)

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if "@" not in value:  # an empty or a bare name would match the comments of everyone who left no address
            raise ValueError("must be an e-mail address")
        return value


class PersonalDataExportIn(PersonalDataIn):
    page: int = Field(default=1, ge=1, le=1_000_000, strict=True)
