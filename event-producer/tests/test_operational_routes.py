"""The producer's /metrics and /docs (issue 13, items 8 and 10)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST


def test_metrics_content_type_names_its_charset_once(producer_client) -> None:
    response = producer_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST


def test_docs_open_swagger_ui_like_the_api(producer_client) -> None:
    response = producer_client.get("/docs")
    assert response.status_code == 302
    assert response.headers["Location"] == "/docs/swagger"
    assert producer_client.get("/docs/swagger").status_code == 200
