"""The JSON and timestamp rules at the edge of the management API (webhooks_core.json_input).

Every route that takes a body refuses JSON the platform cannot hold with a 422 naming the
field (400 when it is not JSON at all), never a 500; PATCH refuses null where a field is not
nullable; a batch refuses a bad message alone; rows stored by earlier versions read back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.models import Message

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}

# Raw JSON fragments (a body is built around each) and the problem each must be named by.
BAD_VALUES = {
    "nul_in_string": ('"a\\u0000b"', "NUL"),
    "lone_surrogate": ('"\\ud800"', "lone surrogate"),
    "nan": ("NaN", "NaN"),
    "infinity": ("Infinity", "finite"),
    "minus_infinity": ("-Infinity", "finite"),
    "beyond_float": ("1e400", "finite"),
    "long_integer": ("1" + "0" * 400, "finite"),
    "too_deep": ("[" * 80 + "]" * 80, "deeper than 64"),
}


def _post_raw(client: FlaskClient, path: str, body: str, headers: dict[str, str]) -> Any:
    return client.post(path, data=body, content_type="application/json", headers=headers)


def _routes(tenant: Any, endpoint: str) -> list[tuple[str, str, str, dict[str, str], str]]:
    """(method, path, body template with {v} for the bad value, headers, field of {v})."""
    app_headers = tenant.headers
    return [
        (
            "POST",
            tenant.path("/messages"),
            '{"event_type": "person.created", "payload": {"x": {v}}}',
            app_headers,
            "payload.x",
        ),
        (
            "POST",
            tenant.path("/relay"),
            '{"url": "http://127.0.0.1:9/r", "payload": {"x": [{v}]}}',
            app_headers,
            "payload.x.0",
        ),
        (
            "POST",
            tenant.path("/endpoints"),
            '{"url": "http://127.0.0.1:9/e", "metadata": {"x": {v}}}',
            app_headers,
            "metadata.x",
        ),
        (
            "PATCH",
            tenant.path(f"/endpoints/{endpoint}"),
            '{"metadata": {"x": {v}}}',
            app_headers,
            "metadata.x",
        ),
        (
            "POST",
            "/api/v1/applications",
            '{"name": "n", "metadata": {"x": {v}}}',
            ADMIN,
            "metadata.x",
        ),
        ("PATCH", tenant.path(), '{"metadata": {"x": {v}}}', ADMIN, "metadata.x"),
        (
            "POST",
            "/api/v1/event-types",
            '{"name": "thing.done", "schema": {"x": {v}}}',
            ADMIN,
            "schema.x",
        ),
        (
            "PATCH",
            "/api/v1/event-types/person.created",
            '{"example": {"x": {v}}}',
            ADMIN,
            "example.x",
        ),
        (
            "POST",
            tenant.path(f"/endpoints/{endpoint}/recover"),
            '{"since": "2020-01-01T00:00:00Z", "x": {v}}',
            app_headers,
            "x",
        ),
        ("POST", tenant.path("/dead-letters/redrive"), '{"x": {v}}', app_headers, "x"),
    ]


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_every_body_route_refuses_json_the_platform_cannot_hold(
    client: FlaskClient,
    tenant: Any,
    endpoint: str,
    field_errors: Any,
    db: sessionmaker[Session],
    kind: str,
) -> None:
    value, message = BAD_VALUES[kind]
    for method, path, template, headers, field in _routes(tenant, endpoint):
        body = template.replace("{v}", value)
        response = client.open(
            path, method=method, data=body, content_type="application/json", headers=headers
        )
        assert response.status_code == 422, (method, path, response.json)
        errors = field_errors(response)
        named = [name for name in errors if name.startswith(field)]
        assert named, (method, path, errors)
        assert message in errors[named[0]], errors
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_json_nested_thousands_deep_is_a_422_not_a_recursion_error(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any, depth: int
) -> None:
    body = '{"event_type": "person.created", "payload": {"x": ' + "[" * depth + "]" * depth + "}}"
    response = _post_raw(client, tenant.path("/messages"), body, tenant.headers)
    assert response.status_code == 422
    assert "deeper than 64" in " ".join(field_errors(response).values())


def test_nul_in_keys_and_not_json_at_all(
    client: FlaskClient, tenant: Any, field_errors: Any
) -> None:
    key = _post_raw(
        client,
        tenant.path("/endpoints"),
        '{"url": "http://127.0.0.1:9/k", "metadata": {"a\\u0000": 1}}',
        tenant.headers,
    )
    assert key.status_code == 422
    assert "metadata.a\\u0000" in field_errors(key)
    for broken in ('{"url": ', b'"\xff\xfe"', "[1, 2,]"):
        response = _post_raw(client, tenant.path("/endpoints"), broken, tenant.headers)
        assert response.status_code == 400, response.json
        assert response.mimetype == "application/problem+json"


def test_numbers_within_float_range_are_accepted(
    client: FlaskClient, tenant: Any, event_types: list[str]
) -> None:
    payload = '{"big": 1.7976931348623157e308, "i": -12345678901234567890}'
    body = '{"event_type": "person.created", "payload": ' + payload + "}"
    response = _post_raw(client, tenant.path("/messages"), body, tenant.headers)
    assert response.status_code == 202, response.json
    stored = client.get(tenant.path(f"/messages/{response.json['id']}"), headers=tenant.headers)
    # jsonb keeps numbers as decimals: the largest double comes back as its 309-digit integer.
    assert float(stored.json["payload"]["big"]) == 1.7976931348623157e308
    assert stored.json["payload"]["i"] == -12345678901234567890


@pytest.mark.parametrize(
    ("timestamp", "utc"),
    [
        ("2026-01-01T00:00:00+16:00", "2025-12-31T08:00:00Z"),
        ("2026-01-01T00:00:00-23:59", "2026-01-01T23:59:00Z"),
        ("2026-01-01T12:00:00", "2026-01-01T12:00:00Z"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
    ],
)
def test_timestamps_with_any_offset_below_24h_are_stored_in_utc(
    client: FlaskClient, tenant: Any, event_types: list[str], timestamp: str, utc: str
) -> None:
    published = client.post(
        tenant.path("/messages"),
        json={"event_type": "person.created", "payload": {}, "timestamp": timestamp},
        headers=tenant.headers,
    )
    assert published.status_code == 202, published.json
    assert published.json["timestamp"] == utc
    listed = client.get(tenant.path("/messages"), headers=tenant.headers)
    assert listed.status_code == 200
    assert listed.json["data"][0]["occurred_at"] == utc


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:00:00-05:00",  # after year 9999 in UTC
        "1969-12-31T23:59:59Z",
        "2026-01-01T00:00:00+24:00",
        "10000-01-01T00:00:00Z",
    ],
)
def test_timestamps_out_of_range_are_refused(
    client: FlaskClient, tenant: Any, event_types: list[str], field_errors: Any, timestamp: str
) -> None:
    published = client.post(
        tenant.path("/messages"),
        json={"event_type": "person.created", "payload": {}, "timestamp": timestamp},
        headers=tenant.headers,
    )
    assert published.status_code == 422, published.json
    assert "timestamp" in field_errors(published)
    listed = client.get(tenant.path("/messages"), headers=tenant.headers)
    assert listed.status_code == 200
    assert listed.json["data"] == []


def test_since_and_until_take_offsets_up_to_24h(
    client: FlaskClient, tenant: Any, endpoint: str, field_errors: Any
) -> None:
    window = {"since": "2026-01-01T00:00:00+16:00", "until": "2026-01-01T00:00:00-23:30"}
    for route in ("/messages", "/deliveries", "/attempts", "/dead-letters"):
        response = client.get(tenant.path(route), query_string=window, headers=tenant.headers)
        assert response.status_code == 200, (route, response.json)
    admin = client.get("/api/v1/deliveries", query_string=window, headers=ADMIN)
    assert admin.status_code == 200
    far = client.get(
        tenant.path("/messages"), query_string={"since": "0001-01-01T00:00:00+01:00"}, headers=ADMIN
    )
    assert far.status_code == 422
    assert "since" in field_errors(far)
    recover = client.post(
        tenant.path(f"/endpoints/{endpoint}/recover"),
        json={"since": "2026-01-01T00:00:00+20:00"},
        headers=tenant.headers,
    )
    assert recover.status_code == 202, recover.json


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("endpoint", "url"),
        ("endpoint", "description"),
        ("endpoint", "event_types"),
        ("endpoint", "headers"),
        ("endpoint", "metadata"),
        ("endpoint", "adaptive_flow"),
        ("application", "name"),
        ("application", "metadata"),
        ("event_type", "description"),
        ("event_type", "archived"),
    ],
)
def test_patch_refuses_null_for_a_field_that_is_not_nullable(
    client: FlaskClient, tenant: Any, endpoint: str, field_errors: Any, path: str, field: str
) -> None:
    target = {
        "endpoint": tenant.path(f"/endpoints/{endpoint}"),
        "application": tenant.path(),
        "event_type": "/api/v1/event-types/person.created",
    }[path]
    response = client.patch(target, json={field: None}, headers=ADMIN)
    assert response.status_code == 422, response.json
    assert field in field_errors(response)
    assert client.get(target, headers=ADMIN).status_code == 200
    assert client.get(tenant.path("/endpoints"), headers=ADMIN).status_code == 200
    assert client.get("/api/v1/applications", headers=ADMIN).status_code == 200
    assert client.get("/api/v1/event-types", headers=ADMIN).status_code == 200


def test_patch_null_clears_what_is_nullable(
    client: FlaskClient, tenant: Any, endpoint: str
) -> None:
    response = client.patch(
        tenant.path(f"/endpoints/{endpoint}"),
        json={"channels": None, "rate_limit": None, "max_in_flight": None, "retry_schedule": None},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.json
    cleared = client.patch(
        "/api/v1/event-types/person.created", json={"schema": None, "example": None}, headers=ADMIN
    )
    assert cleared.status_code == 200, cleared.json


def test_batch_refuses_each_bad_message_alone(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    good = '{"event_type": "person.created", "payload": {"n": 1}}'
    items = [
        good,
        '{"event_type": "person.created", "payload": {"s": "a\\u0000"}}',
        '{"event_type": "person.created", "payload": {"f": NaN}}',
        '{"event_type": "Not A Type", "payload": {}}',
        '{"event_type": "person.created", "payload": {}, "timestamp": "0001-01-01T00:00:00+05:00"}',
        "5",
        '{"event_type": "person.created", "payload": {"deep": ' + "[" * 70 + "]" * 70 + "}}",
        good,
    ]
    body = '{"messages": [' + ", ".join(items) + "]}"
    response = _post_raw(client, tenant.path("/messages/batch"), body, tenant.headers)
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert [r["status"] for r in results] == [202, 422, 422, 422, 422, 422, 422, 202]
    assert (response.json["accepted"], response.json["refused"]) == (2, 6)
    fields = [[e["field"] for e in r["error"]["errors"]] for r in results if "error" in r]
    assert fields[0] == ["payload.s"]
    assert fields[1] == ["payload.f"]
    assert fields[2] == ["event_type"]
    assert fields[3] == ["timestamp"]
    assert fields[4] == ["body"]
    assert fields[5][0].startswith("payload.deep.0")
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 2


def test_redrive_for_an_application_that_does_not_exist_is_404(
    client: FlaskClient, db: sessionmaker[Session]
) -> None:
    missing = uuid.uuid4()
    one = client.post(
        f"/api/v1/applications/{missing}/dead-letters/redrive", json={}, headers=ADMIN
    )
    assert one.status_code == 404, one.json
    assert one.mimetype == "application/problem+json"
    across = client.post(
        "/api/v1/dead-letters/redrive", json={"application_id": str(missing)}, headers=ADMIN
    )
    assert across.status_code == 404, across.json
    everything = client.post("/api/v1/dead-letters/redrive", json={}, headers=ADMIN)
    assert everything.status_code == 202


def test_path_ids_beyond_bigint_are_422(client: FlaskClient, tenant: Any) -> None:
    huge = 2**63
    for path in (f"/deliveries/{huge}", f"/deliveries/{huge}/attempts"):
        response = client.get(tenant.path(path), headers=tenant.headers)
        assert response.status_code == 422, (path, response.json)
    redrive = client.post(tenant.path(f"/dead-letters/{huge}/redrive"), headers=tenant.headers)
    assert redrive.status_code == 422


def test_rows_stored_by_earlier_versions_read_back(
    client: FlaskClient, tenant: Any, endpoint: str, db: sessionmaker[Session]
) -> None:
    """What earlier versions let in (null saved by PATCH, timestamps beyond Python's years)
    is written here directly, then read through every list and get route."""
    with db.begin() as session:
        for event_id, occurred in (
            ("far-future", "10000-01-01T00:00:00Z"),
            ("before-christ", "0001-01-01T00:00:00Z BC"),
            ("deep", "2026-01-01T00:00:00Z"),
        ):
            session.execute(
                text(
                    "INSERT INTO messages (event_id, application_id, event_type, payload,"
                    " occurred_at, source) VALUES (:id, :app, 'person.created',"
                    " CAST(:payload AS jsonb), CAST(:at AS timestamptz), 'http')"
                ),
                {
                    "id": event_id,
                    "app": tenant.id,
                    "payload": json.dumps({"deep": json.loads("[" * 100 + "]" * 100)}),
                    "at": occurred,
                },
            )
        session.execute(
            text(
                "UPDATE endpoints SET headers = 'null', metadata = 'null',"
                " last_attempt_at = 'infinity' WHERE id = :id"
            ),
            {"id": endpoint},
        )
        session.execute(
            text("UPDATE applications SET metadata = 'null' WHERE id = :id"), {"id": tenant.id}
        )
    messages = client.get(tenant.path("/messages"), headers=tenant.headers)
    assert messages.status_code == 200, messages.json
    stamps = {m["id"]: m["occurred_at"] for m in messages.json["data"]}
    assert stamps["far-future"] == "9999-12-31T23:59:59.999999Z"
    assert stamps["before-christ"] == "0001-01-01T00:00:00Z"
    for event_id in stamps:
        one = client.get(tenant.path(f"/messages/{event_id}"), headers=tenant.headers)
        assert one.status_code == 200, one.json
    endpoints = client.get(tenant.path("/endpoints"), headers=tenant.headers)
    assert endpoints.status_code == 200, endpoints.json
    assert endpoints.json["data"][0]["headers"] == {}
    assert endpoints.json["data"][0]["metadata"] == {}
    one_endpoint = client.get(tenant.path(f"/endpoints/{endpoint}"), headers=tenant.headers)
    assert one_endpoint.status_code == 200
    applications = client.get("/api/v1/applications", headers=ADMIN)
    assert applications.status_code == 200, applications.json
    assert applications.json["data"][0]["metadata"] == {}
    assert client.get(tenant.path(), headers=tenant.headers).json["metadata"] == {}


def test_openapi_documents_problem_json_and_every_status(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    for path, item in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("401", "414", "422", "503"):
                assert status in responses, (method, path, status)
            if method in ("post", "put", "patch"):
                assert {"400", "413"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    assert next(iter(response["content"])) == "application/problem+json", (
                        method,
                        path,
                        status,
                    )
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}
    patch = spec["components"]["schemas"]["EndpointPatch"]["properties"]
    assert patch["url"].get("type") == "string"  # not nullable
    assert any(option.get("type") == "null" for option in patch["channels"]["anyOf"])


@pytest.mark.parametrize("value", ["a\x01b", "tab\tok\x7f", "euro \u20ac"])
def test_header_values_must_be_what_http_carries(
    client: FlaskClient, tenant: Any, field_errors: Any, value: str
) -> None:
    for path, body in (
        ("/endpoints", {"url": "http://127.0.0.1:9/h"}),
        ("/relay", {"url": "http://127.0.0.1:9/h", "payload": {}}),
    ):
        response = client.post(
            tenant.path(path), json={**body, "headers": {"X-Team": value}}, headers=tenant.headers
        )
        assert response.status_code == 422, (path, response.json)
        assert "headers" in field_errors(response)
    fine = client.post(
        tenant.path("/endpoints"),
        json={"url": "http://127.0.0.1:9/h", "headers": {"X-Team": "caf\u00e9\tbilling ~!"}},
        headers=tenant.headers,
    )
    assert fine.status_code == 201, fine.json


def test_schemas_may_not_refer_to_urls_and_stored_ones_do_not_break_publishing(
    client: FlaskClient, tenant: Any, endpoint: str, field_errors: Any, db: sessionmaker[Session]
) -> None:
    remote = {"$ref": "http://127.0.0.1:9/schema.json"}
    created = client.post(
        "/api/v1/event-types", json={"name": "thing.done", "schema": remote}, headers=ADMIN
    )
    assert created.status_code == 422, created.json
    assert "schema" in field_errors(created)
    patched = client.patch(
        "/api/v1/event-types/person.created",
        json={"schema": {"properties": {"a": remote}}},
        headers=ADMIN,
    )
    assert patched.status_code == 422, patched.json
    inner = {
        "$defs": {"name": {"$id": "urn:name", "type": "string"}},
        "properties": {"a": {"$ref": "urn:name"}, "b": {"$ref": "#/$defs/name"}},
    }
    local = client.patch(
        "/api/v1/event-types/person.created",
        json={"schema": inner, "example": {"a": "x", "b": "y"}},
        headers=ADMIN,
    )
    assert local.status_code == 200, local.json
    with db.begin() as session:  # as an earlier version could have stored it
        session.execute(
            text("UPDATE event_types SET schema = CAST(:s AS jsonb) WHERE name = 'person.created'"),
            {"s": json.dumps(remote)},
        )
    published = client.post(
        tenant.path("/messages"),
        json={"event_type": "person.created", "payload": {"a": 1}},
        headers=tenant.headers,
    )
    assert published.status_code == 422, published.json
    assert "event_type" in field_errors(published)


def test_a_path_and_query_over_4096_bytes_is_414_problem(client: FlaskClient, tenant: Any) -> None:
    response = client.get(
        tenant.path("/messages"), query_string={"iterator": "x" * 5000}, headers=tenant.headers
    )
    assert response.status_code == 414
    assert response.mimetype == "application/problem+json"
    fine = client.get(
        tenant.path("/messages"), query_string={"iterator": "x" * 300}, headers=tenant.headers
    )
    assert fine.status_code == 422  # not a cursor this API returned


def test_batch_results_carry_every_documented_field(
    client: FlaskClient, tenant: Any, endpoint: str
) -> None:
    response = client.post(
        tenant.path("/messages/batch"),
        json={"messages": [{"event_type": "person.created", "payload": {}}]},
        headers=tenant.headers,
    )
    assert response.status_code == 200
    message = response.json["results"][0]["message"]
    assert message["channels"] is None
    assert "error" not in response.json["results"][0]
