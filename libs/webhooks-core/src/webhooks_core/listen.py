"""Waking on PostgreSQL notifications: a dedicated ``LISTEN`` connection.

Used by the scheduler (``webhooks_deliveries``) and the outbox relay (``webhooks_outbox``)
to sleep until a commit notifies, with a timeout as the fallback poll.  The connection is
psycopg2's own, in autocommit (a notification is delivered between transactions), apart
from the SQLAlchemy pool.  A lost connection is rebuilt on the next wait.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Sequence

import psycopg2  # type: ignore[import-untyped,unused-ignore]
import psycopg2.extensions  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy.engine import make_url

from webhooks_core.db import Backoff

log = logging.getLogger(__name__)


def libpq_dsn(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection URI (for the raw LISTEN connection)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """One connection that LISTENs on ``channels``; :meth:`wait` returns their payloads.

    ``connect_timeout`` (seconds) bounds a connect to a database that does not answer.
    """

    def __init__(
        self, dsn: str, channels: Sequence[str], *, connect_timeout: int | None = None
    ) -> None:
        self._dsn = dsn
        self._channels = tuple(channels)
        self._connect_timeout = connect_timeout
        self._conn: psycopg2.extensions.connection | None = None
        self._backoff = Backoff()

    @property
    def connected(self) -> bool:
        """Whether a LISTEN connection is open now."""
        return self._conn is not None

    def connect(self) -> psycopg2.extensions.connection:
        """LISTEN now (if not already), so no commit after this goes unnoticed; raises
        ``psycopg2.Error`` when the database cannot be reached."""
        if self._conn is not None:
            return self._conn
        extra = {} if self._connect_timeout is None else {"connect_timeout": self._connect_timeout}
        conn = psycopg2.connect(self._dsn, **extra)
        try:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cursor:
                for channel in self._channels:
                    cursor.execute(f"LISTEN {channel}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def wait(self, timeout: float) -> set[str] | None:
        """Wait until a notification arrives (possibly already) or ``timeout`` passes.

        Returns the payloads of the notifications drained (empty when the timeout passed),
        or None when there is no connection: it could not be made or was just lost (then
        it is closed, and the next wait connects again).  Raises nothing of the database.
        """
        try:
            conn = self.connect()
            conn.poll()
            if not conn.notifies:
                select.select([conn], [], [], timeout)
                conn.poll()
            payloads = {note.payload for note in conn.notifies}
            conn.notifies.clear()
            return payloads
        except (psycopg2.Error, OSError):
            log.warning("LISTEN connection lost or refused; reconnecting", exc_info=True)
            self.close()
            return None

    def wait_or_sleep(self, timeout: float, *, backoff: float | None = None) -> set[str]:
        """:meth:`wait`, but without a connection sleep and return an empty set, so a
        caller's loop neither spins nor fails while the database is away.

        The sleep is ``min(timeout, backoff)``; without ``backoff``, the lost-connection
        policy's next pause (:class:`webhooks_core.db.Backoff`, reset once connected).
        """
        payloads = self.wait(timeout)
        if payloads is None:
            pause = self._backoff.next() if backoff is None else backoff
            time.sleep(min(timeout, pause))
            return set()
        self._backoff.reset()
        return payloads

    def close(self) -> None:
        """Close the connection (a later wait opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
