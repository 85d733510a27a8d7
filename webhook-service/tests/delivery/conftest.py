"""Fixtures of the delivery engine tests: a real scheduler and Celery worker (subprocesses),
real HTTP receivers on 127.0.0.1, and helpers to create endpoints and publish messages.

The engine processes run once per session against the test database and vhost, with small
timeouts and a shared offset clock (``WEBHOOKS_CLOCK_OFFSET_FILE``) that tests move forward
instead of sleeping: they are started through the test entry points of
:mod:`delivery.testing`, the only ones that read that switch.  Only 127.0.0.1/32 is an
allowed target, so other loopback addresses (127.0.0.2, ::1) exercise the SSRF guard against
receivers that really listen there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from delivery.config import DeliverySettings
from delivery.testing import EngineTestSettings, OffsetClock
from registration.config import APISettings
from webhooks_core.db import transaction
from webhooks_core.endpoints.sealing import seal
from webhooks_core.messages.envelope import Envelope, utcnow
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, Delivery, Endpoint, EndpointSecret
from webhooks_core.signing import new_secret

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

ENGINE_ENV = {
    "WEBHOOKS_ALLOWED_TARGET_NETWORKS": "127.0.0.1/32",
    "WEBHOOKS_CONNECT_TIMEOUT_SECONDS": "0.5",
    "WEBHOOKS_READ_TIMEOUT_SECONDS": "1.0",
    "WEBHOOKS_TOTAL_TIMEOUT_SECONDS": "1.5",
    "WEBHOOKS_LEASE_SECONDS": "10",
    "WEBHOOKS_RETRY_SCHEDULE": "0,5,300",
    "WEBHOOKS_RETRY_JITTER": "0.2",
    "WEBHOOKS_RETRY_AFTER_MAX_SECONDS": "600",
    "WEBHOOKS_CIRCUIT_BREAKER_THRESHOLD": "3",
    "WEBHOOKS_CIRCUIT_BREAKER_COOLDOWN_SECONDS": "30",
    "WEBHOOKS_AUTO_DISABLE_AFTER_SECONDS": "3600",
    "WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT": "2",
    "WEBHOOKS_DELIVERY_BATCH_SIZE": "10",
    "WEBHOOKS_SCHEDULER_POLL_SECONDS": "0.5",
    "WEBHOOKS_METRICS_PORT": "0",
    # Every successful attempt logged (the default is a sample): the tests read each line.
    "WEBHOOKS_LOG_SUCCESSFUL_ATTEMPTS": "1",
}


# --- the engine processes ---------------------------------------------------------------


@dataclass
class EngineProcesses:
    """The scheduler and worker subprocesses; the worker can be killed and restarted."""

    env: dict[str, str]
    logs: Path
    clock: OffsetClock
    scheduler: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(
            "scheduler", [sys.executable, "-m", "delivery.testing.scheduler"]
        )

    def start_worker(self) -> None:
        self.worker = self._spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "delivery.testing.worker",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "8",
                "-Q",
                "webhooks.deliver",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-l",
                "INFO",
            ],
        )
        self.wait_worker_ready()

    def wait_worker_ready(self) -> None:
        log = self.logs / "worker.log"
        deadline = time.monotonic() + 30
        start = log.stat().st_size if log.exists() else 0
        while time.monotonic() < deadline:
            if log.exists() and b"ready." in log.read_bytes()[start:]:
                return
            assert self.worker is not None
            assert self.worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError("worker did not start: " + log.read_text()[-3000:])

    def kill_worker(self) -> None:
        """SIGKILL the worker: no cleanup, no acks, as if the machine died."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()
        self.worker = None

    def stop(self) -> None:
        # A cold shutdown: the tests are over, nothing in flight needs to finish.
        for proc, sig in ((self.worker, signal.SIGQUIT), (self.scheduler, signal.SIGTERM)):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, sig)
        for proc in (self.worker, self.scheduler):
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture
def api_settings(make_settings: Callable[..., APISettings]) -> APISettings:
    """The API's settings, for tests that set endpoints up through the API's services (its
    secret rotation grace period, its checks)."""
    return make_settings(APISettings)


@pytest.fixture(scope="session")
def engine_settings(
    settings: DeliverySettings, tmp_path_factory: pytest.TempPathFactory
) -> EngineTestSettings:
    """The settings the engine processes run with (same database and vhost as the tests)."""
    clock_file = tmp_path_factory.mktemp("clock") / "offset"
    clock_file.write_text("0")
    values = settings.model_dump()
    values.update({key[len("WEBHOOKS_") :].lower(): value for key, value in ENGINE_ENV.items()})
    values["clock_offset_file"] = str(clock_file)
    return EngineTestSettings.from_env(**values)


# Module scope: the engine stops when a module's tests end, so it never claims deliveries
# that other suites (same database) create and expect to stay pending.
@pytest.fixture(scope="module")
def processes(
    request: pytest.FixtureRequest,
    engine: Any,
    engine_settings: EngineTestSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EngineProcesses]:
    """A scheduler and a thread-pool worker for these tests (started after migration).

    A test module may set ``ENGINE_ENV_EXTRA`` (more settings for both processes) and
    ``ENGINE_WORKER = False`` (a scheduler alone: nothing sends what it leases).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_")}
    env.update(ENGINE_ENV)
    # The HTTP client the suite runs with (WEBHOOKS_HTTP_CLIENT=aiohttp) reaches the worker.
    if "WEBHOOKS_HTTP_CLIENT" in os.environ:
        env["WEBHOOKS_HTTP_CLIENT"] = os.environ["WEBHOOKS_HTTP_CLIENT"]
    env.update(getattr(request.module, "ENGINE_ENV_EXTRA", {}))
    env.update(
        {
            "WEBHOOKS_SEALING_KEYS": os.environ["WEBHOOKS_SEALING_KEYS"],
            "WEBHOOKS_DATABASE_URL": engine_settings.database_url,
            "WEBHOOKS_BROKER_URL": engine_settings.broker_url,
            "WEBHOOKS_CLOCK_OFFSET_FILE": str(engine_settings.clock_offset_file),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    logs = tmp_path_factory.mktemp("engine-logs")
    procs = EngineProcesses(env, logs, OffsetClock(str(engine_settings.clock_offset_file)))
    _purge_deliver_queue(engine_settings)
    procs.start_scheduler()
    if getattr(request.module, "ENGINE_WORKER", True):
        procs.start_worker()
    yield procs
    procs.stop()


def _purge_deliver_queue(settings: DeliverySettings) -> None:
    """Forget tasks a previous run left in the test vhost, and events other suites published.

    The worker here also ingests (``delivery.worker``): events that the outbox tests left in
    ``webhooks.ingest`` would otherwise be fanned out to these tests' endpoints.
    """
    from kombu import Connection

    with Connection(settings.broker_url) as conn:
        channel = conn.channel()
        for queue in ("webhooks.deliver", "webhooks.dead-letters", "webhooks.ingest"):
            try:
                channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - the queue does not exist yet
                channel = conn.channel()


@pytest.fixture
def clock(processes: EngineProcesses, engine_settings: EngineTestSettings) -> Iterator[OffsetClock]:
    """The engine's scheduling clock, back at the wall clock for every test."""
    Path(str(engine_settings.clock_offset_file)).write_text("0")
    yield processes.clock
    Path(str(engine_settings.clock_offset_file)).write_text("0")


# --- receivers --------------------------------------------------------------------------


@dataclass
class Received:
    """One request a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int


@dataclass
class Reply:
    """What a receiver answers; ``handler`` takes over the raw response when set."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    handler: Callable[[BaseHTTPRequestHandler], None] | None = None


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 (or another loopback address) that records every request."""

    host: str
    respond: Callable[[Received, int], Reply | dict[str, Any]]
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server.server_address[1]}/webhook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                got = Received(
                    self.path, dict(self.headers), body, time.time(), self.client_address[1]
                )
                receiver.received.append(got)
                reply = receiver.respond(got, len(receiver.received))
                if isinstance(reply, dict):
                    reply = Reply(**reply)
                if reply.handler is not None:
                    reply.handler(self)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type(
            "Server",
            (ThreadingHTTPServer,),
            {
                "daemon_threads": True,
                "address_family": family,
                # A fan-out connects to one receiver from many threads at once: with the
                # default listen backlog (5) a busy machine drops connects (connect timeouts).
                "request_queue_size": 128,
                # A client hanging up mid-response is what several tests do on purpose.
                "handle_error": lambda *_args: None,
            },
        )
        self.server = server_class((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """``receiver(respond, host="127.0.0.1")`` starts a recording HTTP server.

    ``respond(request, n)`` gets the request and how many arrived so far, and returns a dict
    of :class:`Reply` fields: ``status``, ``headers``, ``body``, or ``handler(request_handler)``
    to write the raw response itself.
    """
    started: list[Receiver] = []

    def start(
        respond: Callable[[Received, int], Reply | dict[str, Any]] | None = None,
        host: str = "127.0.0.1",
    ) -> Receiver:
        server = Receiver(host, respond or (lambda _req, _n: Reply())).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- data ---------------------------------------------------------------------------------


@dataclass
class Platform:
    """Creates applications and endpoints and publishes messages, as the API and ingestion do."""

    sessions: sessionmaker[Session]
    app_id: uuid.UUID | None = None

    def application(self) -> uuid.UUID:
        if self.app_id is None:
            with transaction(self.sessions) as session:
                app = Application(name="deliveries")
                session.add(app)
                session.flush()
                self.app_id = app.id
        return self.app_id

    def endpoint(self, url: str, **fields: Any) -> tuple[uuid.UUID, str]:
        """An enabled endpoint receiving every event type; returns (id, whsec secret)."""
        secret = fields.pop("secret", None) or new_secret()
        with transaction(self.sessions) as session:
            endpoint = Endpoint(application_id=self.application(), url=url, **fields)
            session.add(endpoint)
            session.flush()
            session.add(EndpointSecret(endpoint_id=endpoint.id, secret=seal(secret)))
            return endpoint.id, secret

    def publish(
        self, data: dict[str, Any] | None = None, event_type: str = "person.created"
    ) -> str:
        """Accept one message for this application; returns its event id (the webhook-id)."""
        envelope = Envelope(type=event_type, data=data or {"name": "Ada"})
        with transaction(self.sessions) as session:
            accept_message(session, envelope, source="http", application_id=self.application())
        return envelope.id

    def deliveries(self, endpoint_id: uuid.UUID | None = None) -> list[Delivery]:
        with self.sessions() as session:
            query = select(Delivery).order_by(Delivery.id)
            if endpoint_id is not None:
                query = query.where(Delivery.endpoint_id == endpoint_id)
            return list(session.scalars(query))

    def endpoint_row(self, endpoint_id: uuid.UUID) -> Endpoint:
        with self.sessions() as session:
            endpoint = session.get(Endpoint, endpoint_id)
            assert endpoint is not None
            return endpoint


@pytest.fixture
def platform(db: sessionmaker[Session], processes: EngineProcesses) -> Platform:
    return Platform(db)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=10)``: poll until it returns something truthy."""

    def wait(predicate: Callable[[], Any], timeout: float = 10.0, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting: {message or predicate}")
            time.sleep(0.05)

    return wait


LeaseRows = Callable[[Session, list[int]], uuid.UUID]


def _lease_rows(session: Session, ids: list[int]) -> uuid.UUID:
    """Lease the delivery rows ``ids`` as one batch under a new token, as a claim would (any
    mix of endpoints and applications); the token."""
    token = uuid.uuid4()
    until = utcnow() + timedelta(minutes=5)
    session.execute(
        text(
            "UPDATE deliveries SET state = 'sending', lease_token = :token,"
            " lease_expires_at = :until WHERE id = ANY(:ids)"
        ),
        {"token": token, "until": until, "ids": ids},
    )
    session.execute(
        text(
            "INSERT INTO delivery_leases (token, endpoint_id, application_id, expires_at)"
            " SELECT DISTINCT CAST(:token AS uuid), endpoint_id, application_id,"
            " CAST(:until AS timestamptz) FROM deliveries WHERE id = ANY(:ids)"
        ),
        {"token": str(token), "until": until, "ids": ids},
    )
    return token


@pytest.fixture(scope="session")
def lease_rows() -> LeaseRows:
    """``lease_rows(session, ids)`` leases those deliveries as one batch; the lease token."""
    return _lease_rows
