"""The total deadline of a request, which a read timeout alone does not give.

A server dripping one byte a second never trips a read timeout.  Each request registers a
:class:`Watch` with its deadline; the connection it uses attaches itself to the watch when it
sends; one reaper thread shuts down the socket of every request past its deadline.  The pools
here make such connections (which also check the response head, :mod:`delivery.response_heads`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from delivery.response_heads import CheckedResponse


class Watch:
    """The deadline of the request running on one thread, and the connection it uses."""

    __slots__ = ("conn", "deadline", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        self.fired = False


_current = threading.local()


class DeadlineReaper:
    """One daemon thread that shuts down the sockets of requests past their deadline."""

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="webhook-deadlines", daemon=True
                )
                self._thread.start()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            now = time.monotonic()
            with self._lock:
                expired = [w for w in self._watches if w.deadline <= now and not w.fired]
            for watch in expired:
                watch.fired = True
                sock = getattr(watch.conn, "sock", None)
                if sock is not None:
                    # Already closed means the request is ending anyway.
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


_REAPER = DeadlineReaper()


def start_watch(deadline: float) -> Watch:
    """Watch the request about to run on this thread: past ``deadline`` its socket is shut."""
    watch = Watch(deadline)
    _current.watch = watch
    _REAPER.add(watch)
    return watch


def stop_watch(watch: Watch) -> None:
    """The request on this thread has ended."""
    _REAPER.remove(watch)
    _current.watch = None


class _WatchedHTTPConnection(HTTPConnection):
    """Registers itself with the calling thread's deadline before sending."""

    response_class = CheckedResponse

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch: Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.conn = self
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    """The TLS variant of :class:`_WatchedHTTPConnection`."""

    response_class = CheckedResponse

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch: Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.conn = self
        super().request(*args, **kwargs)


class WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection
