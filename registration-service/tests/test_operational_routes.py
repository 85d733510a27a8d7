"""The unauthenticated routes a person or Prometheus opens (issue 13, items 8 and 9)."""

from __future__ import annotations

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
