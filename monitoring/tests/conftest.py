"""The live stack of the monitoring tests: every process of `make run` as a real subprocess on
ephemeral 127.0.0.1 ports, the test database and vhost, and a real Prometheus scraping them
every second with the project's alert rules.

Processes, as the Procfile runs them: registration API (gunicorn, 2 workers, multiprocess
metrics), people producer (gunicorn, its own config), outbox relay, scheduler (with the
database gauges), a delivery worker (a prefork pool of 2 here, to prove the multiprocess
metrics), Flower and Prometheus; plus in-process HTTP receivers.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kombu import Connection
from sqlalchemy import Engine, create_engine, text

from registration.config import APISettings
from webhooks_core.models import Base

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PRODUCER_DATABASE_URL = os.environ.get(
    "WEBHOOKS_TEST_PRODUCER_DATABASE_URL",
    "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_producer_test",
)
RABBITMQ_PROMETHEUS = "127.0.0.1:15692"
RABBITMQ_MANAGEMENT = "http://guest:guest@127.0.0.1:15672/api/"
FLOWER_AUTH = ("flower", "flower-test-password")
# The engine retries once after a second, then dead-letters; short timeouts keep it quick.
ENGINE_ENV = {
    "WEBHOOKS_RETRY_SCHEDULE": "0,1",
    "WEBHOOKS_RETRY_JITTER": "0",
    "WEBHOOKS_CONNECT_TIMEOUT_SECONDS": "1",
    "WEBHOOKS_READ_TIMEOUT_SECONDS": "2",
    "WEBHOOKS_TOTAL_TIMEOUT_SECONDS": "3",
    "WEBHOOKS_SCHEDULER_POLL_SECONDS": "0.5",
    # Keep the failing receiver's breaker closed: the test wants its retries now.
    "WEBHOOKS_CIRCUIT_BREAKER_THRESHOLD": "1000",
    "WEBHOOKS_OUTBOX_POLL_SECONDS": "0.2",
    "WEBHOOKS_ALLOWED_TARGET_NETWORKS": "127.0.0.1/32",
    "WEBHOOKS_LOG_FORMAT": "json",
    # Every successful attempt logged (the default is a sample): a test matches each line.
    "WEBHOOKS_LOG_SUCCESSFUL_ATTEMPTS": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (requests.RequestException, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# --- receivers ------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering every POST with one status code."""

    status: int
    # Optional misbehaviour: a share of requests answered 503, and a random delay.
    failure_ratio: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    hits: list[float] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.hits.append(time.time())
                time.sleep(random.uniform(*receiver.delay))
                failed = random.random() < receiver.failure_ratio
                self.send_response(503 if failed else receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --- processes ------------------------------------------------------------------------


@dataclass
class Stack:
    """The running processes, their ports, and how to reach Prometheus and Flower."""

    logs: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    flower_auth: tuple[str, str] = FLOWER_AUTH
    worker_name: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str], **extra_env: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            args,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,  # own process group: its metrics and our cleanup
        )

    def log(self, name: str, tail: int = 4000) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-tail:]

    def wait_http(self, name: str, url: str, timeout: float = 40.0, **kwargs: Any) -> None:
        def up() -> bool:
            process = self.processes[name]
            assert process.poll() is None, f"{name} exited:\n{self.log(name)}"
            return requests.get(url, timeout=2, **kwargs).status_code == 200

        try:
            wait_until(up, timeout, f"{name} at {url}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log(name)}") from None

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate`` until it returns something truthy, or fail saying ``what``."""
        return wait_until(predicate, timeout, what)

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def prometheus(self, query: str) -> list[dict[str, Any]]:
        """An instant query; fails on any error Prometheus reports."""
        response = requests.get(
            self.url("prometheus", "/api/v1/query"), params={"query": query}, timeout=10
        )
        body = response.json()
        assert body.get("status") == "success", f"{query}: {body}"
        return body["data"]["result"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            del name


def prometheus_config(stack: Stack, vhost: str) -> dict[str, Any]:
    """monitoring/prometheus/prometheus.native.yml with the test ports, scraped every second."""
    config = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.native.yml").read_text())
    config["global"].update(
        {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    )
    config["rule_files"] = [str(REPO / "monitoring/prometheus/alerts.yml")]
    by_port = {
        "9090": f"127.0.0.1:{stack.ports['prometheus']}",
        "8000": f"127.0.0.1:{stack.ports['api']}",
        "8001": f"127.0.0.1:{stack.ports['producer']}",
        "9101": f"127.0.0.1:{stack.ports['worker']}",
        "9102": f"127.0.0.1:{stack.ports['scheduler']}",
        "9103": f"127.0.0.1:{stack.ports['relay']}",
        "5555": f"127.0.0.1:{stack.ports['flower']}",
        "15692": RABBITMQ_PROMETHEUS,
    }
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [by_port[t.rsplit(":", 1)[1]] for t in static["targets"]]
        if "params" in job:
            job["params"]["vhost"] = [vhost]
    return config


def reset_databases(engine: Engine) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    from producer.migrations import upgrade

    producer = create_engine(PRODUCER_DATABASE_URL)
    with producer.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    producer.dispose()
    upgrade(PRODUCER_DATABASE_URL)


def purge_queues(broker_url: str) -> None:
    """Forget what an interrupted earlier run left in the test vhost."""
    with Connection(broker_url) as conn:
        for queue in ("webhooks.deliver", "webhooks.ingest", "webhooks.dead-letters"):
            channel = conn.channel()
            # A queue that does not exist yet closes the channel: nothing to forget there.
            with contextlib.suppress(Exception):
                channel.queue_purge(queue)
                channel.close()


@pytest.fixture(scope="module")
def receivers() -> Iterator[dict[str, Receiver]]:
    started = {
        "ok": Receiver(200).start(),
        "failing": Receiver(500).start(),
        "gone": Receiver(410).start(),
    }
    yield started
    for receiver in started.values():
        receiver.stop()


def foreign_consumers(vhost: str) -> dict[str, int]:
    """Consumers on the platform's queues of ``vhost`` (RabbitMQ management API)."""
    url = f"{RABBITMQ_MANAGEMENT}queues/{urllib.parse.quote(vhost, safe='')}"
    response = requests.get(url, params={"columns": "name,consumers"}, timeout=10)
    response.raise_for_status()
    return {
        queue["name"]: queue["consumers"]
        for queue in response.json()
        if queue["name"] in ("webhooks.deliver", "webhooks.ingest") and queue.get("consumers")
    }


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    """``receiver_factory(status, failure_ratio=, delay=)`` starts a receiver for one test."""
    started: list[Receiver] = []

    def start(status: int, **options: Any) -> Receiver:
        started.append(Receiver(status, **options).start())
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., APISettings]) -> APISettings:
    """The API's settings (the admin token the stack is started with) on the test services."""
    return make_settings(APISettings)


@pytest.fixture(scope="module")
def stack(
    settings: APISettings, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Every process of the native stack, started once for the module."""
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.fail("prometheus is missing: run scripts/install-monitoring.sh (make test does)")
    reset_databases(engine)
    vhost = settings.broker_url.rsplit("/", 1)[1]
    # Another suite's worker still consuming this vhost would take part of the run.
    wait_until(lambda: not foreign_consumers(vhost), 30, f"other consumers to leave vhost {vhost}")
    purge_queues(settings.broker_url)
    root = tmp_path_factory.mktemp("stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "PROMETHEUS_"))}
    env.update(ENGINE_ENV)
    env.update(
        {
            "WEBHOOKS_SEALING_KEYS": os.environ["WEBHOOKS_SEALING_KEYS"],
            "WEBHOOKS_DATABASE_URL": settings.database_url,
            "WEBHOOKS_PRODUCER_DATABASE_URL": PRODUCER_DATABASE_URL,
            "WEBHOOKS_BROKER_URL": settings.broker_url,
            "WEBHOOKS_ADMIN_TOKEN": str(settings.admin_token),
            "WEBHOOKS_UPLOAD_DIR": str(root / "uploads"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    stack = Stack(root, env, worker_name=f"monitoring-{vhost}@{socket.gethostname()}")
    for name in ("api", "producer", "worker", "scheduler", "relay", "flower", "prometheus"):
        stack.ports[name] = free_port()
    for name in ("api", "worker"):
        (root / "metrics" / name).mkdir(parents=True)
    try:
        stack.spawn(
            "api",
            [str(BIN / "gunicorn"), "-c", "registration-service/gunicorn.conf.py",
             "--workers", "2", "--bind", f"127.0.0.1:{stack.ports['api']}"],
            PROMETHEUS_MULTIPROC_DIR=str(root / "metrics" / "api"),
        )  # fmt: skip
        stack.spawn(
            "producer",
            [str(BIN / "gunicorn"), "-c", "event-producer/gunicorn.conf.py", "--bind",
             f"127.0.0.1:{stack.ports['producer']}"],
        )  # fmt: skip
        stack.spawn(
            "worker",
            [str(BIN / "celery"), "-A", "delivery.worker", "worker", "--pool", "prefork",
             "--concurrency", "2", "-Q", "webhooks.deliver", f"--hostname={stack.worker_name}",
             "--without-mingle", "--without-gossip"],
            PROMETHEUS_MULTIPROC_DIR=str(root / "metrics" / "worker"),
            WEBHOOKS_METRICS_PORT=str(stack.ports["worker"]),
        )  # fmt: skip
        stack.spawn(
            "scheduler",
            [sys.executable, "-m", "delivery.scheduler"],
            WEBHOOKS_METRICS_PORT=str(stack.ports["scheduler"]),
        )
        stack.spawn(
            "relay",
            [sys.executable, "-m", "outbox.relay", f"--metrics-port={stack.ports['relay']}"],
        )
        stack.spawn(
            "flower",
            [str(BIN / "celery"), "-A", "delivery.worker", "flower", "--address=127.0.0.1",
             f"--port={stack.ports['flower']}"],
            FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH),
            FLOWER_BROKER_API=RABBITMQ_MANAGEMENT,
        )  # fmt: skip
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(stack, vhost)))
        stack.spawn(
            "prometheus",
            [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{stack.ports['prometheus']}", "--log.level=warn"],
        )  # fmt: skip
        stack.wait_http("api", stack.url("api", "/health"))
        stack.wait_http("producer", stack.url("producer", "/health"))
        stack.wait_http("worker", stack.url("worker", "/metrics"))
        stack.wait_http("scheduler", stack.url("scheduler", "/metrics"))
        stack.wait_http("relay", stack.url("relay", "/metrics"))
        stack.wait_http("flower", stack.url("flower", "/healthcheck"))
        stack.wait_http("prometheus", stack.url("prometheus", "/-/ready"))
        # Every target scraped once before anything happens, so counters start from zero.
        jobs = len(config_jobs := prometheus_config(stack, vhost)["scrape_configs"])
        stack.wait(
            lambda: len(stack.prometheus("up == 1")) == jobs,
            20,
            f"all {jobs} targets up: {[j['job_name'] for j in config_jobs]}",
        )
        yield stack
    finally:
        stack.stop()
