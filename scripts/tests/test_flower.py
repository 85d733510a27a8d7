"""Flower waits for a worker, so its Broker tab lists the queues (issue 13, item 3)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from kombu.utils.url import url_to_parts

from webhooks_core.settings import CoreSettings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(settings: CoreSettings) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "WEBHOOKS_DATABASE_URL": settings.database_url,
        "WEBHOOKS_BROKER_URL": settings.broker_url,
        "WEBHOOKS_METRICS_PORT": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_flower_starts_after_the_worker_and_lists_its_queue(
    settings: CoreSettings, tmp_path: Path
) -> None:
    env = _env(settings)
    port = _free_port()
    broker = url_to_parts(settings.broker_url)
    env["FLOWER_BROKER_API"] = (
        f"http://{broker.username}:{broker.password}@{broker.hostname}:15672/api/"
    )
    env["FLOWER_UNAUTHENTICATED_API"] = "true"
    flower = _spawn(
        [str(ROOT / "scripts/run-flower.sh"), "celery", "-A", "delivery.worker", "flower",
         "--address=127.0.0.1", f"--port={port}"],
        env, tmp_path / "flower.log",
    )  # fmt: skip
    worker = None
    try:
        # No worker yet: Flower does not start.
        time.sleep(4)
        assert flower.poll() is None
        assert "waiting for a worker" in (tmp_path / "flower.log").read_text()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "flower started before a worker"

        worker = _spawn(
            [str(BIN / "celery"), "-A", "delivery.worker", "worker", "--pool", "threads",
             "--concurrency", "2", "-Q", "webhooks.deliver", "--without-mingle",
             "--without-gossip", "--without-heartbeat", "-l", "INFO"],
            env, tmp_path / "worker.log",
        )  # fmt: skip
        deadline = time.monotonic() + 90
        page = ""
        while time.monotonic() < deadline:
            assert flower.poll() is None, (tmp_path / "flower.log").read_text()[-3000:]
            try:
                response = requests.get(f"http://127.0.0.1:{port}/broker", timeout=5)
            except requests.RequestException:
                time.sleep(0.5)
                continue
            page = response.text
            if "webhooks.deliver" in page:
                break
            time.sleep(0.5)
        # The Broker tab lists the worker's queue at its first load, without a refresh.
        assert "webhooks.deliver" in page, page[-2000:]
        assert "No queue data is available" not in page
    finally:
        _stop(flower)
        if worker is not None:
            _stop(worker)
