"""A small closed-loop HTTP/1.1 load generator on uvloop, for the ingest scenario.

``connections`` keep-alive connections each send one request, read the whole answer, and send
the next, until the time is up.  Written on raw asyncio streams rather than a client library
so that, on a two-core machine, the generator costs a fraction of what it measures.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

Request = tuple[str, str, dict[str, str], bytes]  # method, path, headers, body


@dataclass
class LoadResult:
    """Answers by status, and how long the load ran."""

    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    errors: int = 0

    @property
    def accepted(self) -> int:
        """2xx answers."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def per_second(self) -> float:
        """2xx answers per second."""
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


def json_request(method: str, path: str, payload: object, headers: dict[str, str]) -> Request:
    """A JSON request tuple."""
    return (
        method,
        path,
        {"Content-Type": "application/json", **headers},
        json.dumps(payload).encode(),
    )


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request
) -> tuple[int, bool]:
    """Send one request and read its whole answer: (status, server closes)."""
    method, path, headers, body = request
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("closed before answering")
    status = int(status_line.split()[1])
    length = 0
    close = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def _one_connection(
    port: int,
    make: Callable[[int], Request],
    counter: list[int],
    limits: tuple[float, int],
    result: LoadResult,
    pace: tuple[float, float] | None = None,
) -> None:
    """Requests one after another on one connection, reconnecting after errors; with ``pace``
    (start, requests per second), request ``n`` is not sent before ``start + (n - 1) / rate``."""
    deadline, max_requests = limits
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < deadline and counter[0] < max_requests:
        try:
            if pace is not None:
                due = pace[0] + counter[0] / pace[1]
                if due > deadline:
                    break
                counter[0] += 1
                n = counter[0]
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if pace is None:
                counter[0] += 1
                n = counter[0]
            status, close = await _exchange(reader, writer, make(n))
            result.statuses[status] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            result.errors += 1
            if writer is not None:
                writer.close()
                writer = None
            await asyncio.sleep(0.1)
    if writer is not None:
        writer.close()


async def _run(
    port: int,
    make: Callable[[int], Request],
    connections: int,
    seconds: float,
    max_requests: int,
    rate: float | None = None,
) -> LoadResult:
    result = LoadResult()
    counter = [0]
    started = time.monotonic()
    limits = (started + seconds, max_requests)
    pace = (started, rate) if rate else None
    await asyncio.gather(
        *(_one_connection(port, make, counter, limits, result, pace) for _ in range(connections))
    )
    result.seconds = time.monotonic() - started
    return result


def run_load(
    port: int,
    make: Callable[[int], Request],
    *,
    connections: int,
    seconds: float,
    max_requests: int = 100_000_000,
    rate: float | None = None,
) -> LoadResult:
    """Drive ``127.0.0.1:port`` with ``make(n)`` requests for ``seconds`` or until
    ``max_requests`` were sent; ``errors`` counts failed connections and requests.

    ``rate`` (requests per second) paces the load: open loop up to the connections' capacity,
    so ``max_requests`` take at least ``max_requests / rate`` seconds (the chaos run keeps its
    load going through the whole fault schedule this way).  None: as fast as answers come.
    """
    work = _run(port, make, connections, seconds, max_requests, rate)
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(work)
    except ImportError:  # pragma: no cover - uvloop is a dev requirement
        return asyncio.run(work)
