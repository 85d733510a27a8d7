"""File uploads: stored under the upload directory, announced by file.uploaded."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from producer.config import ProducerSettings


def test_upload_stores_the_file_and_fires_file_uploaded(
    producer_client: Any, producer_settings: ProducerSettings, outbox_events: Any
) -> None:
    content = b"hello, webhooks\n" * 100
    response = producer_client.post(
        "/uploads",
        data={"file": (io.BytesIO(content), "report.txt", "text/plain")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    upload = response.json
    assert upload["name"] == "report.txt"
    assert upload["size"] == len(content)
    assert upload["sha256"] == hashlib.sha256(content).hexdigest()
    assert upload["content_type"] == "text/plain"
    assert (Path(producer_settings.upload_dir) / upload["id"]).read_bytes() == content

    (event,) = outbox_events()
    assert event["type"] == "file.uploaded"
    assert event["id"] == upload["event_id"]
    del upload["event_id"]
    assert event["data"] == {"file": upload}


def test_upload_without_a_file_is_a_422(producer_client: Any, outbox_events: Any) -> None:
    response = producer_client.post(
        "/uploads", data={"other": "x"}, content_type="multipart/form-data"
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert outbox_events() == []


def test_upload_too_large_is_a_413(producer_client: Any, outbox_events: Any) -> None:
    response = producer_client.post(
        "/uploads",
        data={"file": (io.BytesIO(b"x" * (65 * 1024)), "big.bin")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert outbox_events() == []
