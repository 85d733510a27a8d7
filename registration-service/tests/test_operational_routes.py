"""The unauthenticated routes a person or Prometheus opens (issue 13, items 8 and 9)."""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST


def test_metrics_content_type_names_its_charset_once(client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert response.headers["Content-Type"].count("charset") == 1


def test_the_root_opens_the_console(client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"
    signed_out = client.get("/console/", follow_redirects=True)
    assert signed_out.status_code == 200
    assert b"Sign in" in signed_out.data


def test_the_api_document_shows_no_restructuredtext(client) -> None:
    for path in ("/openapi.json", "/docs/openapi.json"):
        spec = client.get(path).get_json()
        text = json.dumps(spec)
        assert "``" not in text, path
    summaries = [
        operation.get("summary", "")
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
    ]
    assert any('"since"' in summary for summary in summaries)
    assert not any("`" in summary for summary in summaries)


def test_plain_docs_rewrites_literals_and_roles() -> None:
    from webhooks_core.openapi_text import plain_docs

    spec = {"summary": "Send ``url`` via :func:`send`", "description": "Use ``key``."}
    assert plain_docs(spec) == {"summary": 'Send "url" via "send"', "description": "Use `key`."}
