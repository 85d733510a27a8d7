"""A process that starts while its database is away waits for it; a wrong URL fails at once."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from webhooks_core.db import Backoff, LostConnectionPolicy, check_database
from webhooks_core.settings import CoreSettings, SettingsError

QUICK = LostConnectionPolicy(backoff_base=0.1, backoff_cap=0.3)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for sock in (source, target):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class LateDatabase:
    """A port that refuses connections until :meth:`open`, then forwards them to the real
    PostgreSQL: a database that comes up while a process waits for it."""

    def __init__(self, database_url: str) -> None:
        self._url = make_url(database_url)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()  # nothing listens on it: connections are refused
        self._listener: socket.socket | None = None

    def open(self) -> None:
        target = (self._url.host or "127.0.0.1", self._url.port or 5432)
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener

        def serve() -> None:
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                upstream = socket.create_connection(target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


@pytest.fixture
def late(settings: CoreSettings) -> Iterator[LateDatabase]:
    database = LateDatabase(settings.database_url)
    yield database
    database.close()


def test_a_process_waits_for_a_database_that_comes_up(
    late: LateDatabase, settings: CoreSettings
) -> None:
    url = make_url(settings.database_url).set(host="127.0.0.1", port=late.port)
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    opener = threading.Timer(1.0, late.open)
    opener.start()
    try:
        check_database(engine, wait_seconds=60, backoff=Backoff(QUICK, jitter=lambda: 1.0))
    finally:
        opener.cancel()
        engine.dispose()
    assert late._listener is not None  # it was refused first, and reached once it opened


def test_a_database_that_stays_away_fails_after_the_wait(
    late: LateDatabase, settings: CoreSettings
) -> None:
    url = make_url(settings.database_url).set(host="127.0.0.1", port=late.port)
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    with pytest.raises(SettingsError, match="WEBHOOKS_DATABASE_URL"):
        check_database(engine, wait_seconds=0.5, backoff=Backoff(QUICK, jitter=lambda: 1.0))


def test_a_wrong_database_name_fails_at_once(settings: CoreSettings) -> None:
    url = make_url(settings.database_url).set(database="webhooks_no_such_database")
    engine = create_engine(url)
    with pytest.raises(SettingsError, match="does not exist"):
        # A wait it never uses: the first answer says the URL is wrong.
        check_database(engine, wait_seconds=3600)
