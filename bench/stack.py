"""The platform's own processes for a benchmark or chaos run, and the services they use.

A run gets its own PostgreSQL databases and RabbitMQ vhost (never the ``webhooks`` ones that
``make run`` uses), recreated empty and migrated at start.  Every process is started in its
own session (process group) with its output in ``<log_dir>/<name>.log``, and
:meth:`Stack.stop` ends every one of them: it runs on normal exit, on an exception, on Ctrl-C
and on SIGTERM (see :func:`stopping_on_signals`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672"


@dataclass(frozen=True)
class ServiceNames:
    """The databases and vhost of one run."""

    database: str = "webhooks_bench"
    producer_database: str = "webhooks_producer_bench"
    vhost: str = "webhooks_bench"

    def __post_init__(self) -> None:
        shared = {"webhooks", "webhooks_producer", "webhooks_test", "webhooks_producer_test"}
        if {self.database, self.producer_database, self.vhost} & shared:
            raise ValueError("a bench or chaos run never uses the shared databases or vhost")
        for name in (self.database, self.producer_database, self.vhost):
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
                raise ValueError(f"not a plain lower-case name: {name!r}")

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the platform database."""
        return f"{PG}/{self.database}"

    @property
    def producer_database_url(self) -> str:
        """SQLAlchemy URL of the demo producer's database."""
        return f"{PG}/{self.producer_database}"

    @property
    def broker_url(self) -> str:
        """AMQP URL of the vhost."""
        return f"{AMQP}/{self.vhost}"


def _run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        list(argv), env=dict(env) if env else None, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


def _psql(database: str, sql: str) -> str:
    return _run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-tAc", sql])


def reset_services(names: ServiceNames, env: Mapping[str, str], *, producer: bool = True) -> None:
    """Recreate the run's databases (empty, migrated) and its vhost (empty)."""
    for database in (names.database, names.producer_database) if producer else (names.database,):
        # The names are checked plain identifiers (ServiceNames), so quoting them is safe.
        exists = _psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{database}'")  # noqa: S608
        if not exists.strip():
            _run(["createdb", "-h", "127.0.0.1", "-U", "postgres", database])
        _psql(database, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    vhosts = _run(["rabbitmqctl", "-q", "list_vhosts"]).split()
    if names.vhost in vhosts:
        _run(["rabbitmqctl", "-q", "delete_vhost", names.vhost])
    _run(["rabbitmqctl", "-q", "add_vhost", names.vhost])
    _run(["rabbitmqctl", "-q", "set_permissions", "-p", names.vhost, "guest", ".*", ".*", ".*"])
    _run([PYTHON, "-m", "webhooks_core.migrations"], env)
    if producer and _module_exists("producer.migrations"):
        _run([PYTHON, "-m", "producer.migrations"], env)


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BENCH_SEALING_KEYS = "bench:YmVuY2gtc2VhbGluZy1rZXktMDEyMzQ1Njc4OWFiY2Q="


def base_env(names: ServiceNames, **settings: str) -> dict[str, str]:
    """The environment of every process of the run: this machine's, minus any ``WEBHOOKS_*``
    (the Makefile exports the shared ones), plus the run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "WEBHOOKS_DATABASE_URL": names.database_url,
            "WEBHOOKS_PRODUCER_DATABASE_URL": names.producer_database_url,
            "WEBHOOKS_BROKER_URL": names.broker_url,
            "WEBHOOKS_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
            # The Makefile's (or the operator's) key; the bench's own when run without it.
            "WEBHOOKS_SEALING_KEYS": os.environ.get("WEBHOOKS_SEALING_KEYS", BENCH_SEALING_KEYS),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    env.update({f"WEBHOOKS_{key.upper()}": value for key, value in settings.items()})
    return env


@dataclass
class Managed:
    """One started process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]
    ready_marker: bytes | None = None
    ready_url: str | None = None
    log_offset: int = 0

    @property
    def pid(self) -> int:
        """The process id of the main process."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the main process runs."""
        return self.process.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The main process and every descendant still running."""
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def children(self) -> list[psutil.Process]:
        """Descendants only (a prefork pool's children, gunicorn's workers)."""
        return self.tree()[1:]

    def rss_bytes(self) -> int:
        """Resident memory of the whole tree."""
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log, for error messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Stack:
    """The processes of one run; every one is stopped by :meth:`stop`."""

    log_dir: Path
    processes: dict[str, Managed] = field(default_factory=dict)

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        ready_marker: bytes | None = None,
        ready_url: str | None = None,
        timeout: float = 60.0,
    ) -> Managed:
        """Start ``argv`` as ``name`` and wait until it logs ``ready_marker`` or
        ``ready_url`` answers (when given)."""
        if name in self.processes and self.processes[name].alive():
            raise RuntimeError(f"{name} already runs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            out.write(f"\n--- start {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            offset = out.tell()
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        managed = Managed(name, argv, env, log, process, ready_marker, ready_url)
        managed.log_offset = offset
        self.processes[name] = managed
        self.wait_ready(managed, timeout)
        return managed

    def wait_ready(self, managed: Managed, timeout: float = 60.0) -> None:
        """Wait for the process's readiness signal; raise with its log if it died."""
        # Look only at what this start wrote (the log is appended to across restarts).
        start = managed.log_offset
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not managed.alive():
                raise RuntimeError(f"{managed.name} exited at start:\n{managed.log_tail()}")
            if managed.ready_marker is not None:
                if managed.ready_marker in managed.log.read_bytes()[start:]:
                    return
            elif managed.ready_url is not None:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(managed.ready_url, timeout=2).status_code < 500:
                        return
            else:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{managed.name} not ready in {timeout} s:\n{managed.log_tail()}")

    def restart(self, name: str, timeout: float = 60.0) -> Managed:
        """Start ``name`` again with the same command (after a kill)."""
        old = self.processes[name]
        if old.alive():
            self.stop_one(name)
        return self.start(
            name,
            old.argv,
            old.env,
            ready_marker=old.ready_marker,
            ready_url=old.ready_url,
            timeout=timeout,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group of ``name`` and reap it."""
        managed = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(managed.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                managed.process.wait(timeout=30)

    def stop_one(self, name: str, grace: float = 15.0) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds."""
        managed = self.processes[name]
        if managed.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(managed.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                managed.process.wait(timeout=grace)
        # Whatever is left of the group (a pool child that outlived its parent) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(managed.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.process.wait(timeout=5)

    def stop(self) -> None:
        """Stop every process, newest first; safe to call more than once."""
        for name in reversed(list(self.processes)):
            with contextlib.suppress(Exception):
                self.stop_one(name)


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so ``finally`` blocks stop the stack."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def code_version() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (others' work in progress)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.rstrip()

    changed = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": changed}


def celery_bin() -> str:
    """The ``celery`` script of this virtualenv."""
    return str(BIN / "celery") if (BIN / "celery").exists() else shutil.which("celery") or "celery"
