"""Property tests of the live API against its own OpenAPI document (schemathesis):
for generated requests to every operation — valid ones and invalid ones — the API never
answers 500, answers only the statuses it documents, with the documented content type
and body schema (docs/contract.md, "HTTP API": errors, "never a stack trace")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.platform.config import Settings
from tests.support.api import LiveApi, live_api

pytestmark = pytest.mark.integration

EXAMPLES = 12  # per operation and mode: ~26 operations x 2 modes, about a minute in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest_asyncio.fixture
async def api(settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(settings) as live:
        yield live


def _run(base_url: str, key: str, doc: dict[str, Any], mode: schemathesis.GenerationMode) -> list[str]:
    """Every operation, EXAMPLES cases each; the failures (empty when all hold)."""
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as err:  # hypothesis re-raises the shrunk failure: record it, go on
            failures.append(f"{operation.label} [{mode.value}]: {str(err)[:1500]}")
    return failures


async def test_api_no_server_error_and_only_documented_statuses_for_generated_requests(api: LiveApi) -> None:
    """Positive and negative generated requests against every documented operation."""
    key = await api.key("admin", name="schemathesis")
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        doc = (await http.get("/openapi.json")).json()
    failures: list[str] = []
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
        failures += await asyncio.to_thread(_run, api.base_url, key, doc, mode)
    assert not failures, "\n\n".join(failures)
