"""File uploads: store the file under the upload directory, then fire ``file.uploaded``."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session, sessionmaker

from outbox import publish
from producer.models import Upload
from producer.schemas import UploadOut
from webhooks_core.db import run_transaction
from webhooks_core.errors import InvalidField
from webhooks_core.messages.envelope import Envelope

CHUNK = 64 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Stored:
    """A stored upload and the id of the event it fired."""

    upload: Upload
    event_id: str


def store_upload(
    sessions: sessionmaker[Session],
    upload_dir: Path,
    *,
    name: str,
    content_type: str | None,
    stream: IO[bytes],
) -> Stored:
    """Write ``stream`` to disk while hashing it, record it, and fire ``file.uploaded``.

    The file is written first and removed again if the database transaction fails, so a
    committed upload always has its file and a failed one leaves none behind.
    """
    name = os.path.basename(name.replace("\\", "/")).strip()
    if not name:
        raise InvalidField("the file needs a name", field="file")
    if len(name) > 255:
        raise InvalidField("the file name must be at most 255 characters", field="file")
    upload_id = uuid.uuid4()
    upload_dir.mkdir(parents=True, exist_ok=True)
    relative = f"{upload_id}"
    target = upload_dir / relative
    digest = hashlib.sha256()
    size = 0
    with target.open("xb") as out:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)

    def work(session: Session) -> Stored:
        upload = Upload(
            id=upload_id,
            name=name,
            content_type=(content_type or DEFAULT_CONTENT_TYPE)[:255],
            size=size,
            sha256=digest.hexdigest(),
            path=relative,
        )
        session.add(upload)
        session.flush()
        data = UploadOut.model_validate(upload).model_dump(mode="json")
        return Stored(upload, publish(session, Envelope(type="file.uploaded", data={"file": data})))

    try:
        return run_transaction(sessions, work)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
