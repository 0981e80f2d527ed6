"""The OpenAPI 3.1 document, with request schemas generated from the pydantic models that validate them."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import TypeAdapter

from service.api.schemas import CommentIn, FeedbackIn, PersonalDataExportIn, PersonalDataIn
from service.config import settings
from service.models import MAX_ID

_REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}
_SCORES = {
    "type": "object",
    "properties": {"spam": {"type": ["number", "null"]}, "abuse": {"type": ["number", "null"]}},
}
_COMMENT_STATUS = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "integer"},
        "external_id": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": ["pending", "decided"]},
        "decision": {"type": ["string", "null"], "enum": ["approve", "hold", "reject", None]},
        "category": {"type": ["string", "null"], "enum": ["spam", "abuse", None]},
        "scores": _SCORES,
        "reasons": {"type": "array", "items": {"type": "string"}},
        "model": {"type": "object", "additionalProperties": {"type": "string"}},
        "decided_by": {"type": ["string", "null"]},
        "decided_at": {"type": ["string", "null"]},
        "links": {"type": "object", "properties": {"self": {"type": "string"}}},
    },
}

_TEXT = {"type": "string"}
_PERSONAL_RECORD = {
    "type": "object",
    "required": ["id", "content", "author"],
    "properties": {
        "id": {"type": "integer"},
        "external_id": {"type": ["string", "null"]},
        "received_at": {"type": ["string", "null"]},
        "content": _TEXT,
        "author": {
            "type": "object",
            "properties": {key: _TEXT for key in ("name", "email", "url", "ip", "user_agent")},
        },
        "referrer": _TEXT,
        "post_url": _TEXT,
        "meta": {"type": "object"},
        "decision": {"type": ["string", "null"]},
        "personal_data_erased_at": {"type": ["string", "null"]},
    },
}
_PERSONAL_DATA = {
    "type": "object",
    "required": ["comments", "done"],
    "properties": {"comments": {"type": "array", "items": _PERSONAL_RECORD}, "done": {"type": "boolean"}},
}


def _json_body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=schema)}}},
    }


@cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR, "CommentStatus": _COMMENT_STATUS}
    schemas["PersonalData"] = _PERSONAL_DATA
    for model in (CommentIn, FeedbackIn, PersonalDataIn, PersonalDataExportIn):
        schema = TypeAdapter(model).json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["CommentIn"]["properties"]["content"]["maxLength"] = settings().max_content_chars
    auth_errors = {
        "401": _err("missing or invalid API key"),
        "429": _err("rate limited"),
        "503": _err("the database is unavailable (database_unavailable): retry after Retry-After seconds"),
    }
    body_errors = {
        "400": _err("malformed JSON or parameter"),
        "413": _err("body too large"),
        "415": _err("not application/json"),
        "422": _err("invalid or unknown field"),
    }
    comment_id = {
        "name": "comment_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bouncer API",
            "version": "1.0.0",
            "description": "Comment moderation and spam filtering.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/comments": {
                "post": {
                    "summary": "Submit a comment and wait for its decision",
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 10000},
                        }
                    ],
                    "requestBody": _json_body("CommentIn"),
                    "responses": {
                        "200": _ok("decided", "CommentStatus"),
                        "202": _ok("stored; the decision is pending", "CommentStatus"),
                        **body_errors,
                        **auth_errors,
                    },
                }
            },
            "/api/v1/comments/{comment_id}": {
                "get": {
                    "summary": "A comment's status and decision",
                    "parameters": [comment_id],
                    "responses": {
                        "200": _ok("the comment", "CommentStatus"),
                        "404": _err("no such comment"),
                        **auth_errors,
                    },
                }
            },
            "/api/v1/comments/{comment_id}/feedback": {
                "post": {
                    "summary": "Label a comment (the blog's own moderators)",
                    "parameters": [comment_id],
                    "requestBody": _json_body("FeedbackIn"),
                    "responses": {
                        "200": {
                            "description": "label recorded",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "label": {"type": "string"},
                                            "comment": {"$ref": _REF.format(model="CommentStatus")},
                                        },
                                    }
                                }
                            },
                        },
                        "404": _err("no such comment"),
                        **body_errors,
                        **auth_errors,
                    },
                }
            },
            "/api/v1/personal-data/export": {
                "post": {
                    "summary": "A commenter's personal data on the site, by e-mail address (right of access)",
                    "description": "One page of 100 of the comments from this address, oldest first; "
                    "done is true on the last page.",
                    "requestBody": _json_body("PersonalDataExportIn"),
                    "responses": {
                        "200": _ok("a page of the commenter's data", "PersonalData"),
                        **body_errors,
                        **auth_errors,
                    },
                }
            },
            "/api/v1/personal-data/erase": {
                "post": {
                    "summary": "Erase a commenter's personal data on the site, by e-mail address (right to erasure)",
                    "description": "Empties author name, e-mail, website, IP, user agent, referrer and meta of "
                    "every comment from this address; the text, decision and labels stay.",
                    "requestBody": _json_body("PersonalDataIn"),
                    "responses": {
                        "200": {
                            "description": "how many comments held the commenter's data",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["erased"],
                                        "properties": {"erased": {"type": "integer", "minimum": 0}},
                                    }
                                }
                            },
                        },
                        **body_errors,
                        **auth_errors,
                    },
                }
            },
            "/api/v1/health": {
                "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "alive"}}}
            },
            "/api/v1/ready": {
                "get": {
                    "summary": "Readiness",
                    "security": [],
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
        },
    }
