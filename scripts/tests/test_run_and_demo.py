"""``make run``'s wrapper and the demo's files (issue 13, item 14)."""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HONCHO = Path(sys.executable).parent / "honcho"


def _stack(tmp_path: Path, procfile: str) -> subprocess.Popen[str]:
    (tmp_path / "Procfile").write_text(procfile)
    return subprocess.Popen(
        [str(ROOT / "scripts/run-stack.sh"), str(HONCHO), "start", "-f", "Procfile"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def test_ctrl_c_stops_the_stack_without_an_error_status(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stack = _stack(
        tmp_path,
        "sleeper: sleep 60\n"
        f"python: {sys.executable} -c \"import pathlib, time; pathlib.Path('{ready}').touch();"
        ' time.sleep(60)"\n',
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert stack.poll() is None, stack.stdout.read() if stack.stdout else ""
        assert time.monotonic() < deadline, "the stack did not start"
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
    output, _ = stack.communicate(timeout=30)
    assert stack.returncode == 0, output
    assert "stack stopped" in output


def test_a_process_that_fails_on_its_own_still_fails_the_run(tmp_path: Path) -> None:
    stack = _stack(tmp_path, "broken: sh -c 'exit 3'\nsleeper: sleep 60\n")
    output, _ = stack.communicate(timeout=30)
    assert stack.returncode == 3, output


def _demo() -> object:
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts/demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_keeps_its_secret_and_token_files_private(tmp_path: Path) -> None:
    demo = _demo()
    old = os.umask(0o022)  # the usual umask: new files would be world-readable
    try:
        fresh = tmp_path / "demo" / "endpoint-secret"
        demo.write_private(fresh, "whsec_abc\n")  # type: ignore[attr-defined]
        left = tmp_path / "demo" / "token"
        left.write_text("old\n")
        left.chmod(0o644)  # as an earlier version left it
        demo.write_private(left, "wh_new\n")  # type: ignore[attr-defined]
    finally:
        os.umask(old)
    for path, text in ((fresh, "whsec_abc\n"), (left, "wh_new\n")):
        assert path.read_text() == text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    source = (ROOT / "scripts/demo.py").read_text()
    # Every file the demo keeps in var/demo goes through write_private.
    assert ".write_text(" not in source
