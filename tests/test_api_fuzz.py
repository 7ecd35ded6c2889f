"""The OpenAPI spec fuzzed with schemathesis: whatever it sends, valid or not, the API never answers 5xx.

It runs as an admin (every route open to it) against a real SQLite store holding incidents with evidence,
so that the generated requests reach the handlers and not only the authentication in front of them.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from flux_secu.api.app import create_app
from flux_secu.api.backend import StoreBackend
from flux_secu.store import SQLiteStore

from .api_helpers import JPEG, PASSWORDS, add_incident, api_config

EXAMPLES = 15


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = SQLiteStore(tmp / "fuzz.db")
    for i in range(3):
        add_incident(store, tmp / "evidence", 1_795_989_600.0 + i, files={"snapshot.jpg": JPEG})
    app = create_app(api_config(tmp), store, StoreBackend(store), b"fuzz-secret")
    token = TestClient(app).post("/api/login", json={"name": "admin", "password": PASSWORDS["admin"]})
    yield app, {"Authorization": f"Bearer {token.json()['token']}"}
    store.close()


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str], seen: set[int]) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        response = case.call(headers={**(case.headers or {}), **headers})
        seen.add(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body,
                                            response.text[:500])

    try:
        run()
    except Unsatisfiable:
        # Nothing can be made invalid in a request without parameters (GET /health).
        assert mode is GenerationMode.NEGATIVE and not operation.definition.raw.get("parameters")


def test_no_request_gets_a_server_error(served: Any) -> None:
    app, admin = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: set[int] = set()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in GenerationMode:  # valid requests, then invalid ones
            fuzz(operation, mode, admin if operation.path != "/api/login" else {}, seen)
    assert operations >= 18
    # The generated requests reached the handlers, not only the authentication in front of them.
    assert {200, 404, 422} <= seen, seen
