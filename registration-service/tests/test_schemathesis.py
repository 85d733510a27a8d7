"""Schemathesis against the management API, in-process (WSGI) on the real test database.

Every operation of the OpenAPI spec is called with generated requests, valid ones (with the
tenant's real application and endpoint in the path, so they reach the domain) and invalid ones
(anything in every part of the request), as the admin and as an application token; then a
stateful run (as the admin) follows the links schemathesis infers between operations.  Every
response must pass the four checks below: no 5xx, a documented status code, a documented
content type and a body matching the documented schema.  Bounded and derandomized so that CI
is reproducible.

``WEBHOOKS_SCHEMATHESIS_EXAMPLES`` raises the number of cases per operation and mode for a
longer local run; the figures of a run are printed (``pytest -s``).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from flask.testing import FlaskClient
from flask_openapi3 import OpenAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, text

from webhooks_core.models import Base

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}
EXAMPLES = int(os.environ.get("WEBHOOKS_SCHEMATHESIS_EXAMPLES", "25"))
STATEFUL_STEPS = 40


class Figures:
    """What a run generated and what failed, by check."""

    def __init__(self) -> None:
        self.operations: set[str] = set()
        self.cases = 0
        self.failures: Counter[str] = Counter()
        self.examples: list[str] = []

    def record(self, label: str, failures: list[Failure]) -> None:
        self.operations.add(label)
        self.cases += 1
        for failure in failures:
            for check in failure.checks or (failure.code,):
                self.failures[check] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{label}: {failure.title}: {failure.message[:300]}")

    def summary(self, caller: str) -> str:
        by_check = ", ".join(f"{name}={count}" for name, count in sorted(self.failures.items()))
        return (
            f"schemathesis ({caller}): operations={len(self.operations)} cases={self.cases} "
            f"failures={sum(self.failures.values())} [{by_check or 'none'}]"
        )


def _validate(case: schemathesis.Case, headers: dict[str, str]) -> list[Failure]:
    try:
        case.call_and_validate(headers=headers, checks=CHECKS)
    except FailureGroup as group:
        return list(group.exceptions)
    except Failure as failure:
        return [failure]
    return []


@pytest.fixture
def api(
    app: OpenAPI, client: FlaskClient, tenant: Any, endpoint: str
) -> tuple[schemathesis.BaseSchema, dict[str, Any]]:
    """The loaded spec, and the real ids to put in valid requests' paths."""
    # A published message, so that message and delivery routes find something.
    published = client.post(
        tenant.path("/messages"),
        json={"event_type": "person.created", "payload": {"n": 1}, "event_id": "evt_1"},
        headers=tenant.headers,
    )
    assert published.status_code == 202, published.json
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    ids = {"app_id": tenant.id, "endpoint_id": endpoint, "event_id": "evt_1", "delivery_id": 1}
    return schema, ids


def _strategy(
    operation: Any, mode: GenerationMode, ids: dict[str, str]
) -> st.SearchStrategy[schemathesis.Case]:
    if mode is GenerationMode.NEGATIVE:
        return operation.as_strategy(generation_mode=mode)  # type: ignore[no-any-return]
    names = {parameter.name for parameter in operation.path_parameters}
    real = {name: value for name, value in ids.items() if name in names}
    return operation.as_strategy(generation_mode=mode, path_parameters=real)  # type: ignore[no-any-return]


def _run_operation(
    operation: Any,
    mode: GenerationMode,
    ids: dict[str, str],
    headers: dict[str, str],
    figures: Figures,
) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],  # failures are counted, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode, ids))
    def run(case: schemathesis.Case) -> None:
        figures.record(label, _validate(case, headers))

    run()


# About a minute each on an idle machine; several times that on a loaded one.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("caller", ["admin", "application"])
def test_every_operation_answers_as_documented(
    api: tuple[schemathesis.BaseSchema, dict[str, str]], tenant: Any, caller: str
) -> None:
    schema, ids = api
    headers = ADMIN if caller == "admin" else tenant.headers
    figures = Figures()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(operation, mode, ids, headers, figures)
    print(figures.summary(caller))
    assert len(figures.operations) >= 40
    assert not figures.failures, "\n".join([figures.summary(caller), *figures.examples])


def _reset(engine: Engine, client: FlaskClient) -> None:
    """Empty tables, then an application with an event type, an endpoint and a message."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    created = client.post("/api/v1/applications", json={"name": "acme"}, headers=ADMIN)
    app_path = f"/api/v1/applications/{created.json['id']}"
    client.post("/api/v1/event-types", json={"name": "person.created"}, headers=ADMIN)
    client.post(
        f"{app_path}/endpoints",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["person.created"]},
        headers=ADMIN,
    )
    client.post(
        f"{app_path}/messages",
        json={"event_type": "person.created", "payload": {"n": 1}, "event_id": "evt_1"},
        headers=ADMIN,
    )


@pytest.mark.timeout(900)
def test_stateful_links_answer_as_documented(
    api: tuple[schemathesis.BaseSchema, dict[str, str]], engine: Engine, client: FlaskClient
) -> None:
    """Sequences of calls along the inferred links (create, then get, patch, delete...).

    Each scenario starts from the same database, so that hypothesis sees the same answers to
    the same calls.
    """
    schema, _ = api
    figures = Figures()
    base: type[Any] = schema.as_state_machine()

    class Workflow(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            _reset(engine, client)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": ADMIN}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            label = f"{case.operation.method.upper()} {case.operation.path}"
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as group:
                figures.record(label, list(group.exceptions))
            except Failure as failure:
                figures.record(label, [failure])
            else:
                figures.record(label, [])

    schemathesis.stateful.run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(figures.summary("stateful"))
    assert figures.cases > 0
    assert not figures.failures, "\n".join([figures.summary("stateful"), *figures.examples])
