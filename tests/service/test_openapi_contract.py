"""schemathesis against /api/v1/openapi.json: no 5xx and every response fits the documented schema.

Both valid inputs and inputs that break the schema (negative mode) are generated for every operation.
"""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.conftest import WorkerProcess, make_site

NO_INPUT = {"/api/v1/health", "/api/v1/ready"}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


def test_api_conforms_to_its_openapi_document(app: Any, worker: WorkerProcess) -> None:
    site = make_site(name="schemathesis")
    headers = {"Authorization": f"Bearer {site['api_key']}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), results  # every operation of the document loads
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) >= 5
    for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            conforms()
        except Unsatisfiable:
            # Nothing to break in an operation without parameters or body (health, ready, openapi.json).
            assert mode is GenerationMode.NEGATIVE and operation.path in NO_INPUT, operation.path
