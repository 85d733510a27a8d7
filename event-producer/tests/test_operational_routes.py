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


def test_the_documents_show_no_restructuredtext(producer_client) -> None:
    spec = producer_client.get("/openapi.json").get_data(as_text=True)
    assert "``" not in spec
    assert ":func:" not in spec
    served = producer_client.get("/docs/openapi.json").get_data(as_text=True)
    assert "``" not in served


def test_a_form_post_is_told_to_send_json(producer_client) -> None:
    response = producer_client.post("/people", data={"name": "Ada"})
    assert response.status_code == 415
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.get_json(force=True)
    assert "application/json" in body["detail"]
    assert "PersonIn" not in response.get_data(as_text=True)
