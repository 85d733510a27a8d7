"""A fast webhook receiver for the benchmark and the chaos run, on 127.0.0.1 only.

One listening socket, served by one or more forked processes, each running a uvloop event loop
with a small HTTP/1.1 keep-alive parser (the receiver must never be what limits a run).  Each
request is recorded as one line of its process's log file::

    arrival (unix seconds) TAB webhook-id TAB path TAB signature TAB status

``signature`` is 1 when the Standard Webhooks signature verifies against the endpoint's
secret, 0 when it does not and -1 when the headers are missing; ``status`` is what the receiver
answered (0: it never answered, the request hung; -1: it cut the connection in the middle of
the answer's headers).  Secrets are derived from the path and a
seed (:func:`derive_secret`), so whoever creates the endpoints knows them without a file.

Behaviour is chosen by the path, ``/r/<spec>/<name>``, where ``spec`` is ``-``-separated:

* ``ok``: answer 200 at once;
* ``fail<N>``: answer 500 to N % of requests;
* ``hang<N>``: never answer N % of requests (the connection is closed after the hang time);
* ``timeout``: never answer any request;
* ``delay<MS>``: wait MS milliseconds before answering;
* ``bearer``: answer 401 unless ``Authorization: Bearer`` holds a token the benchmark's
  token server (:mod:`bench.tokens`) issued to the client id that is this path
  (:func:`token_valid`).

Hostile receivers, for the chaos run's poisoned application (``make bench`` uses none):

* ``nul``: the answer's body holds NUL bytes, invalid UTF-8 and an encoded lone surrogate, and
  one of its headers holds a NUL byte and a byte that is not UTF-8;
* ``cut``: send the status line and half a header, then close the connection;
* ``gone``: answer 410 Gone to every request.

``GET /_stats`` answers the counters of all processes as JSON.  Run it with
``python -m bench.receiver --log-dir DIR --port-file FILE`` (``--help`` for the rest); the
seed comes from ``BENCH_SECRET_SEED``.  With ``--tls-cert`` and ``--tls-key`` it serves
HTTPS, and with ``--tls-client-ca`` as well it requires a client certificate issued by that
CA (mutual TLS): a client without one never gets past the handshake, so nothing is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import functools
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import requests

DEFAULT_SEED = "bench-receiver-seed"
SEED_ENV = "BENCH_SECRET_SEED"
_COUNTERS = ("received", "ok", "bad_signature", "flushed")
_MAX_HEAD = 64 * 1024
_FLUSH_SECONDS = 0.1

_RESPONSES = {
    200: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    500: b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    400: b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    401: b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n",
    404: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    410: b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n",
}
# What PostgreSQL text refuses or UTF-8 cannot decode: NUL, 0xff, a truncated sequence and
# the UTF-8 encoding of a lone surrogate (U+D800).
POISON_BODY = b"ok\x00\xff\xfe\xc3(\xed\xa0\x80\x00end"
_REASONS = {200: b"OK", 410: b"Gone", 500: b"Internal Server Error"}
# The status line and half a header: the connection closes before the blank line.
_CUT = b"HTTP/1.1 200 OK\r\nContent-Ty"


def _poisoned_response(status: int) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"X-Poison: a\x00b\xffc\r\nContent-Length: %d\r\n\r\n%s"
        % (status, _REASONS[status], len(POISON_BODY), POISON_BODY)
    )


def derive_secret(seed: str, path: str) -> str:
    """The ``whsec_`` secret of the endpoint at ``path``: HMAC(seed, path), 24 bytes."""
    key = hmac.new(seed.encode(), path.encode(), hashlib.sha256).digest()[:24]
    return "whsec_" + base64.b64encode(key).decode()


def derive_client_secret(seed: str, client_id: str) -> str:
    """The OAuth client secret of ``client_id`` at the benchmark's token server."""
    return hmac.new(seed.encode(), b"client:" + client_id.encode(), hashlib.sha256).hexdigest()


def _token_mac(seed: str, client_id: str, nonce: str) -> str:
    digest = hmac.new(seed.encode(), f"token:{client_id}:{nonce}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def issue_token(seed: str, client_id: str, nonce: str) -> str:
    """An access token for ``client_id``: ``nonce.mac``, checkable without a shared store."""
    return f"{nonce}.{_token_mac(seed, client_id, nonce)}"


def token_valid(seed: str, client_id: str, authorization: str) -> bool:
    """True when ``authorization`` is ``Bearer <a token issued to client_id>``."""
    scheme, _, token = authorization.partition(" ")
    nonce, _, mac = token.strip().partition(".")
    if scheme.lower() != "bearer" or not nonce or not mac:
        return False
    return hmac.compare_digest(mac, _token_mac(seed, client_id, nonce))


def signature_valid(secret: str, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True when one ``v1,`` entry of ``header`` is the HMAC-SHA256 of id.timestamp.body.

    Written here rather than imported from the platform, so a bug in the platform's signer
    cannot hide itself from the checker.
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(entry[3:], expected)
        for entry in header.split()
        if entry.startswith("v1,")
    )


@dataclass(frozen=True)
class Behaviour:
    """What the receiver does for one path."""

    fail_ratio: float = 0.0
    hang_ratio: float = 0.0
    delay_seconds: float = 0.0
    poisoned_body: bool = False
    cut: bool = False
    gone: bool = False
    bearer: bool = False

    @classmethod
    def parse(cls, path: str) -> Behaviour:
        """Read the behaviour of ``/r/<spec>/<name>``; any other path behaves ``ok``."""
        parts = path.split("/")
        if len(parts) < 4 or parts[1] != "r":
            return cls()
        fail = hang = delay = 0.0
        words = parts[2].split("-")
        for word in words:
            if word.startswith("fail") and word[4:].isdigit():
                fail = int(word[4:]) / 100
            elif word.startswith("hang") and word[4:].isdigit():
                hang = int(word[4:]) / 100
            elif word == "timeout":
                hang = 1.0
            elif word.startswith("delay") and word[5:].isdigit():
                delay = int(word[5:]) / 1000
        return cls(
            fail_ratio=fail,
            hang_ratio=hang,
            delay_seconds=delay,
            poisoned_body="nul" in words,
            cut="cut" in words,
            gone="gone" in words,
            bearer="bearer" in words,
        )


def endpoint_path(spec: str, name: str) -> str:
    """The path of an endpoint named ``name`` with behaviour ``spec`` (``ok``, ``fail20``...)."""
    return f"/r/{spec}/{name}"


@dataclass(frozen=True)
class Receipt:
    """One request as the receiver saw it."""

    arrived: float
    webhook_id: str
    path: str
    signature: int
    status: int

    @property
    def accepted(self) -> bool:
        """The receiver answered 2xx: the sender may count the webhook as delivered."""
        return 200 <= self.status < 300


def read_receipts(log_dir: Path) -> Iterator[Receipt]:
    """Every receipt logged under ``log_dir`` (all processes, in no particular order)."""
    for log in sorted(log_dir.glob("receipts-*.tsv")):
        with log.open(encoding="utf-8") as lines:
            for line in lines:
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 5:
                    continue  # a line cut by a kill mid-write; the request is counted elsewhere
                arrived, webhook_id, path, signature, status = fields
                yield Receipt(float(arrived), webhook_id, path, int(signature), int(status))


class _Recorder:
    """Buffers one process's receipts and appends them to its log file."""

    def __init__(self, log_file: Path, counters: Any, index: int) -> None:
        self._file = log_file.open("a", encoding="utf-8")
        self._lines: list[str] = []
        self._counters = counters
        self._base = index * len(_COUNTERS)

    def count(self, which: int) -> None:
        self._counters[self._base + which] += 1

    def record(self, webhook_id: str, path: str, signature: int, status: int) -> None:
        self._lines.append(f"{time.time():.6f}\t{webhook_id}\t{path}\t{signature}\t{status}\n")
        self.count(0)
        if status == 200:
            self.count(1)
        if signature == 0:
            self.count(2)

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._file.write("".join(lines))
            self._file.flush()
            self._counters[self._base + 3] += len(lines)

    def close(self) -> None:
        self.flush()
        self._file.close()


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order."""

    def __init__(self, server: _ReceiverState) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._hanging = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and not self._hanging:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    self._reply(400, close=True)
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            try:
                method, target, _version = head[0].split(" ", 2)
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._reply(400, close=True)
                return
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body = bytes(self._buffer[end + 4 : total])
            del self._buffer[:total]
            self._handle(method, target.split("?", 1)[0], headers, body)

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        server = self._server
        if path == "/_stats":
            payload = json.dumps(server.stats()).encode()
            self._write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
            return
        if method != "POST":
            self._reply(404)
            return
        webhook_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        header = headers.get("webhook-signature", "")
        if webhook_id and stamp and header:
            secret = server.secret(path)
            signature = int(signature_valid(secret, webhook_id, stamp, body, header))
        else:
            signature = -1
        behaviour = server.behaviour(path)
        draw = random.random()
        if draw < behaviour.hang_ratio:
            server.recorder.record(webhook_id, path, signature, 0)
            self._hang()
            return
        if behaviour.cut:
            server.recorder.record(webhook_id, path, signature, -1)
            self._write(_CUT)
            self._close()
            return
        status = 500 if draw < behaviour.hang_ratio + behaviour.fail_ratio else 200
        if behaviour.gone:
            status = 410
        if behaviour.bearer and not server.bearer_valid(path, headers.get("authorization", "")):
            status = 401
        server.recorder.record(webhook_id, path, signature, status)
        if behaviour.delay_seconds:
            reply = functools.partial(self._reply, status, poisoned=behaviour.poisoned_body)
            asyncio.get_running_loop().call_later(behaviour.delay_seconds, reply)
        else:
            self._reply(status, poisoned=behaviour.poisoned_body)

    def _hang(self) -> None:
        # Read nothing more and never answer; close late so the socket does not leak.
        self._hanging = True
        loop = asyncio.get_running_loop()
        loop.call_later(self._server.hang_seconds, self._close)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _reply(self, status: int, *, close: bool = False, poisoned: bool = False) -> None:
        self._write(_poisoned_response(status) if poisoned else _RESPONSES[status])
        if close:
            self._close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


class _ReceiverState:
    """What every connection of one process shares."""

    def __init__(
        self, recorder: _Recorder, counters: Any, processes: int, seed: str, hang_seconds: float
    ) -> None:
        self.recorder = recorder
        self.hang_seconds = hang_seconds
        self._counters = counters
        self._processes = processes
        self._seed = seed
        self._secrets: dict[str, str] = {}
        self._behaviours: dict[str, Behaviour] = {}

    def secret(self, path: str) -> str:
        secret = self._secrets.get(path)
        if secret is None:
            secret = self._secrets[path] = derive_secret(self._seed, path)
        return secret

    def bearer_valid(self, path: str, authorization: str) -> bool:
        return token_valid(self._seed, path, authorization)

    def behaviour(self, path: str) -> Behaviour:
        behaviour = self._behaviours.get(path)
        if behaviour is None:
            behaviour = self._behaviours[path] = Behaviour.parse(path)
        return behaviour

    def stats(self) -> dict[str, int]:
        width = len(_COUNTERS)
        return {
            name: sum(self._counters[p * width + i] for p in range(self._processes))
            for i, name in enumerate(_COUNTERS)
        }


def _serve_process(
    index: int, sock: socket.socket, counters: Any, args: argparse.Namespace, seed: str
) -> None:
    """Run one process's event loop until SIGTERM or SIGINT."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dev requirement; asyncio still works
        pass
    recorder = _Recorder(Path(args.log_dir) / f"receipts-{index}.tsv", counters, index)
    state = _ReceiverState(recorder, counters, args.processes, seed, args.hang_seconds)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = await loop.create_server(
            lambda: _Connection(state), sock=sock, backlog=4096, ssl=server_context(args)
        )
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _FLUSH_SECONDS)
                recorder.flush()
        finally:
            server.close()
            recorder.close()

    asyncio.run(main())


def server_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-cert``/``--tls-key`` (None: plain HTTP); with
    ``--tls-client-ca``, client certificates issued by that CA are required."""
    if not args.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca:
        context.load_verify_locations(cafile=args.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def serve(args: argparse.Namespace) -> int:
    """Bind, fork the serving processes, write the port file, and wait for them."""
    seed = os.environ.get(SEED_ENV, DEFAULT_SEED)
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.setblocking(False)
    counters = multiprocessing.get_context("fork").RawArray(
        ctypes.c_longlong, args.processes * len(_COUNTERS)
    )
    if args.processes == 1:
        _write_port_file(args.port_file, sock.getsockname()[1])
        _serve_process(0, sock, counters, args, seed)
        return 0
    children = []
    for index in range(args.processes):
        pid = os.fork()
        if pid == 0:  # child: serve, then leave without running the parent's cleanup
            code = 0
            try:
                _serve_process(index, sock, counters, args, seed)
            except BaseException:  # noqa: BLE001 - a child must never return into the parent's code
                code = 1
            os._exit(code)
        children.append(pid)
    _write_port_file(args.port_file, sock.getsockname()[1])

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        os.waitpid(pid, 0)
    return 0


def _write_port_file(port_file: str | None, port: int) -> None:
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)  # atomic, so a reader never sees half a number


@dataclass(frozen=True)
class ReceiverTLS:
    """The PEM files of an HTTPS receiver: its certificate chain and key, and the CA that
    issued them (the harness trusts it for ``/_stats``); for mutual TLS, the CA its clients'
    certificates must come from and the harness's own client certificate and key."""

    certificate: Path
    key: Path
    ca: Path
    client_ca: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None

    def arguments(self) -> list[str]:
        """The receiver's command-line options for these files."""
        options = ["--tls-cert", str(self.certificate), "--tls-key", str(self.key)]
        if self.client_ca is not None:
            options += ["--tls-client-ca", str(self.client_ca)]
        return options


class RunningReceiver:
    """A receiver started as a child process of the harness (``python -m bench.receiver``);
    HTTPS with ``tls``."""

    def __init__(
        self,
        log_dir: Path,
        *,
        processes: int = 1,
        hang_seconds: float = 60.0,
        seed: str = DEFAULT_SEED,
        python: str = sys.executable,
        tls: ReceiverTLS | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.seed = seed
        self.tls = tls
        self._processes = processes
        self._hang_seconds = hang_seconds
        self._python = python
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._http = requests.Session()
        # Loopback only: no proxy, and no REQUESTS_CA_BUNDLE overriding the test CA below.
        self._http.trust_env = False
        if tls is not None:
            self._http.verify = str(tls.ca)
            if tls.client_certificate is not None and tls.client_key is not None:
                self._http.cert = (str(tls.client_certificate), str(tls.client_key))

    def start(self, timeout: float = 20.0) -> RunningReceiver:
        """Start it and wait until it listens."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.log_dir / "port"
        port_file.unlink(missing_ok=True)
        env = {**os.environ, SEED_ENV: self.seed}
        self._process = subprocess.Popen(
            [
                self._python,
                "-m",
                "bench.receiver",
                "--log-dir",
                str(self.log_dir),
                "--port-file",
                str(port_file),
                "--processes",
                str(self._processes),
                "--hang-seconds",
                str(self._hang_seconds),
                *(self.tls.arguments() if self.tls else []),
            ],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the receiver did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        while True:  # the port file is written before every forked process serves
            try:
                self.stats()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the receiver does not answer") from None
                time.sleep(0.05)
        return self

    @property
    def pid(self) -> int | None:
        """The receiver's main process id."""
        return self._process.pid if self._process else None

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this receiver."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, int]:
        """Counters of all processes: received, ok, bad_signature, flushed."""
        response = self._http.get(self.url("/_stats"), timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def wait_flushed(self, timeout: float = 10.0) -> None:
        """Wait until every request received so far is in the log files."""
        # Wait for what was received when asked: under load, there is always newer traffic.
        wanted = self.stats()["received"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["flushed"] >= wanted:
                return
            time.sleep(0.05)
        raise TimeoutError("receiver logs not flushed")

    def receipts(self) -> list[Receipt]:
        """Every receipt so far."""
        self.wait_flushed()
        return list(read_receipts(self.log_dir))

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        self._http.close()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> RunningReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m bench.receiver``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (see --port-file)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--log-dir", required=True, help="receipts-<process>.tsv go here")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--hang-seconds", type=float, default=60.0)
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain")
    parser.add_argument("--tls-key", help="the private key (PEM) of --tls-cert")
    parser.add_argument("--tls-client-ca", help="require client certificates issued by this CA")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.host not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("the receiver only listens on the loopback interface")
    return args


if __name__ == "__main__":
    sys.exit(serve(parse_args()))
