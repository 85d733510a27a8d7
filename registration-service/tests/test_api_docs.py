"""docs/api.md lists exactly the routes the OpenAPI spec documents."""

from __future__ import annotations

import re
from pathlib import Path

from flask.testing import FlaskClient

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_docs_api_md_matches_the_routes(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    routes = {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    documented = set(
        re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /api/[^`\s]*)`", API_DOC.read_text())
    )
    assert routes - documented == set(), "routes missing from docs/api.md"
    assert documented - routes == set(), "docs/api.md names routes that do not exist"
