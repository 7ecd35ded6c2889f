"""The OpenAPI spec fuzzed with schemathesis: whatever it sends, valid or not, the API never answers 5xx.

It runs as each role and without a session, against a real SQLite store holding incidents with
evidence (so that the generated requests reach the handlers and not only the authentication in front of
them), with the panic webhook on (a real :class:`PanicIngress` whose dispatch opens nothing) and the
acknowledgement links, which answer without a session.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from flux_secu.actors.panic import PanicIngress
from flux_secu.alerts.panic import verifier_from_config
from flux_secu.api.app import create_app
from flux_secu.api.backend import StoreBackend
from flux_secu.store import SQLiteStore

from .api_helpers import JPEG, PASSWORDS, add_incident, api_config

EXAMPLES = 15


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = SQLiteStore(tmp / "fuzz.db")

    def with_panic(d: dict[str, Any]) -> None:
        device = {"id": "btn-1", "agent": "Agent", "secret": "0123456789abcdef-fuzz"}
        d["sites"][0]["panic"] = {"devices": [device]}

    config = api_config(tmp, with_panic)
    for i in range(3):
        add_incident(store, config.evidence_dir, 1_795_989_600.0 + i, files={"snapshot.jpg": JPEG})
    ingress = PanicIngress(verifier_from_config(config), lambda press: f"panic-{press.device_id}")

    class Backend(StoreBackend):
        def panic(self, site: str, raw: bytes, origin: str) -> tuple[int, dict[str, Any]] | None:
            return ingress.handle(site, raw, "http", origin=origin)

    app = create_app(config, store, Backend(store), b"fuzz-secret-of-at-least-32-characters",
                     panic_webhook=True)
    client = TestClient(app)
    logins = {name: client.post("/api/login", json={"name": name, "password": PASSWORDS[name]})
              for name in ("admin", "marc", "zoe")}
    tokens = {name: answer.json()["token"] for name, answer in logins.items()}
    yield app, {name: {"Authorization": f"Bearer {t}"} for name, t in tokens.items()}
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


@pytest.mark.parametrize("who", ["admin", "marc", "zoe", None], ids=["admin", "operator", "viewer", "nobody"])
def test_no_request_gets_a_server_error(served: Any, who: str | None) -> None:
    app, sessions = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: set[int] = set()
    paths = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        paths.add(operation.path)
        headers = sessions[who] if who is not None and operation.path != "/api/login" else {}
        for mode in GenerationMode:  # valid requests, then invalid ones
            fuzz(operation, mode, headers, seen)
    assert len(paths) >= 18 and {"/ack/{token}", "/panic/{site}"} <= paths
    # The generated requests reached the handlers, not only the authentication in front of them.
    assert ({200, 404, 422} if who == "admin" else {401} if who is None else {200, 403}) <= seen, seen
