"""The OpenAPI document, completed with what every route of ``/api/`` can answer.

flask-openapi3 documents the responses each route declares, as ``application/json``.  What
the platform's own layers add to every route is added here, so that the document says the
truth (schemathesis checks it, see ``tests/test_schemathesis.py``):

* every error is ``application/problem+json`` with the ``Problem`` body;
* 401 (the bearer-token gate), 414 (a path and query over 4096 bytes), 422 (a path, query or
  body field) and 503 (the database is unavailable, with ``Retry-After``) on every route; a
  414 may also be gunicorn's own HTML page, for a request line over its 8190 bytes;
* 400 (malformed JSON) and 413 (a body over ``WEBHOOKS_MAX_REQUEST_BYTES``) on every route
  that takes a body (every POST, PUT and PATCH: the JSON gate reads a body sent to any);
* 404 on every route with a path parameter (an unknown id, or another application's).

There is no 429: the management API does not rate-limit.
"""

from __future__ import annotations

from typing import Any

from flask_openapi3 import OpenAPI

from registration.api.auth import PROTECTED_PREFIX
from webhooks_core.problems import PROBLEM_TYPE

_BODY_METHODS = ("post", "put", "patch")
_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing or invalid bearer token",
    403: "Only the admin token may do this",
    404: "Not found (or another application's)",
    409: "Conflict",
    413: "The body is too large",
    414: "The path and query are too long",
    422: "Invalid fields, named in errors",
    503: "The database is unavailable; retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 0}}
}


def _problem_response(status: int, description: str | None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description or _DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status == 503:
        response["headers"] = _RETRY_AFTER
    if status == 414:  # gunicorn's own page, past its request line limit
        response["content"]["text/html"] = {"schema": {"type": "string"}}
    return response


def complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    """Add the statuses the platform's layers answer and make every error problem+json."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    statuses = {401, 414, 422, 503}
    if method in _BODY_METHODS:
        statuses |= {400, 413}
    if "{" in path:
        statuses.add(404)
    for status in statuses:
        responses.setdefault(str(status), {})
    for code, response in responses.items():
        if int(code) >= 400:
            responses[code] = _problem_response(int(code), response.get("description"))


def complete_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Complete every operation under ``/api/`` of ``spec`` (in place); return it."""
    for path, item in spec.get("paths", {}).items():
        if not path.startswith(PROTECTED_PREFIX):
            continue
        for method, operation in item.items():
            if method in ("get", "delete", *_BODY_METHODS):
                complete_operation(path, method, operation)
    return spec


class ManagementAPI(OpenAPI):
    """flask-openapi3's app, whose document is completed once, when first generated."""

    def generate_spec_json(self) -> None:
        super().generate_spec_json()  # type: ignore[no-untyped-call]
        complete_spec(self.spec_json)
