"""Schemathesis against the served OpenAPI document: generated requests (valid and invalid)
to every operation never produce a server error, and 2xx bodies match their schemas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import auth, running_server


@pytest.fixture(scope="module")
def fuzz_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    with running_server("sqlite", request, RATE_BURST_PER_MINUTE="100000") as srv:
        u = srv.register()
        engine = create_engine(normalise_url(srv.database_url))
        with engine.begin() as conn:  # generous quota: the fuzzer must reach the handlers
            conn.execute(text("UPDATE users SET tier='pro' WHERE id=:i"), {"i": u["id"]})
        engine.dispose()
        yield srv.base, auth(u)


@pytest.fixture(scope="module")
def api_schema(fuzz_server: tuple[str, dict[str, str]]) -> schemathesis.BaseSchema:
    base, _ = fuzz_server
    return schemathesis.openapi.from_url(base + "/api/v1/openapi.json")


def test_no_server_errors(api_schema: schemathesis.BaseSchema, fuzz_server: tuple[str, dict[str, str]]) -> None:
    """Every operation, 12 generated cases each (schemathesis' pytest plugin does not load
    under pytest 9 here, so the operations are driven with hypothesis directly)."""
    base, token_headers = fuzz_server
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for op in operations:
        _fuzz(op, base, {} if op.path in _NO_TOKEN else token_headers)


# Login attempts lock the fuzzed emails and logout revokes: fine, but keep our token alive.
_NO_TOKEN = ("/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/auth/refresh")


def _fuzz(op: schemathesis.APIOperation, base: str, headers: dict[str, str]) -> None:
    @given(case=op.as_strategy())
    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base, headers=headers,
                               checks=[not_a_server_error, response_schema_conformance])  # fmt: skip

    check()
