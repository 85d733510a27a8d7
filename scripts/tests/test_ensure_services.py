"""``scripts/ensure-services.sh`` installs PostgreSQL and RabbitMQ when missing (issue 13, item 13).

Nothing is installed or uninstalled for real: the script runs with a PATH of its own that holds
the shell tools it needs and stand-ins for apt-get and the PostgreSQL and RabbitMQ commands.
The stand-in apt-get records its calls and, on ``install``, puts the stand-ins of that
package's commands on the PATH, as the real packages would.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = (
    "bash", "sh", "env", "id", "ls", "sort", "tail", "head", "grep", "cat", "rm", "seq", "sleep",
    "printf", "cp", "chmod", "dirname", "mkdir", "touch",
)  # fmt: skip

# The commands each Debian package brings, as stand-ins that answer "ready".
PACKAGES = {
    "postgresql": {
        "pg_isready": "exit 0",
        "pg_ctlcluster": 'echo "pg_ctlcluster $*" >> "$CALLS"',
        # Every database already exists: the query answers 1.
        "psql": "echo 1",
        "createdb": 'echo "createdb $*" >> "$CALLS"',
    },
    "rabbitmq-server": {
        "rabbitmqctl": (
            'case "$*" in *list_vhosts*) printf "webhooks\\nwebhooks_test\\n";; esac; exit 0'
        ),
        "rabbitmq-server": 'echo "rabbitmq-server $*" >> "$CALLS"',
        "rabbitmq-plugins": 'case "$*" in *list*) echo rabbitmq_prometheus;; esac; exit 0',
    },
}

APT_GET = """#!/bin/bash
echo "apt-get $*" >> "$CALLS"
if [ "$1" = install ]; then
    for package in "$@"; do
        if [ -d "$STANDINS/$package" ]; then
            cp "$STANDINS/$package"/* "$SANDBOX_BIN/"
            if [ "$package" = postgresql ]; then
                mkdir -p "$PG_ROOT/15/main"
                printf 'local all postgres peer\\nhost all all 127.0.0.1/32 scram-sha-256\\n' \\
                    > "$PG_ROOT/15/main/pg_hba.conf"
            fi
        fi
    done
fi
"""


def _script(path: Path, body: str) -> None:
    path.write_text(body if body.startswith("#!") else f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _sandbox(tmp_path: Path, installed: tuple[str, ...] = ()) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    standins = tmp_path / "standins"
    for package, commands in PACKAGES.items():
        (standins / package).mkdir(parents=True)
        for name, body in commands.items():
            _script(standins / package / name, body)
    _script(bin_dir / "apt-get", APT_GET)
    pg_root = tmp_path / "etc-postgresql"
    pg_root.mkdir()
    env = {
        "PATH": str(bin_dir),
        "CALLS": str(tmp_path / "calls"),
        "STANDINS": str(standins),
        "SANDBOX_BIN": str(bin_dir),
        "PG_ROOT": str(pg_root),
        "WEBHOOKS_PG_CONF_ROOT": str(pg_root),
        "HOME": str(tmp_path),
    }
    for package in installed:  # already there before the script runs
        subprocess.run([str(bin_dir / "apt-get"), "install", package], env=env, check=True)
    (tmp_path / "calls").write_text("")
    return env


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts/ensure-services.sh")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_machine_without_them_gets_both_installed(tmp_path: Path) -> None:
    assert os.geteuid() == 0 or shutil.which("sudo"), "the script needs root or sudo"
    env = _sandbox(tmp_path)
    first = _run(env)
    assert first.returncode == 0, first.stdout + first.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    installs = [call for call in calls if call.startswith("apt-get install")]
    assert [call for call in calls if call.startswith("apt-get update")] == ["apt-get update -qq"]
    assert any(call.endswith(" postgresql") for call in installs), calls
    assert any(call.endswith(" rabbitmq-server") for call in installs), calls
    assert "installing postgresql from Debian's packages" in first.stdout
    # The project's passwordless URLs get in: trust for postgres on loopback, on top.
    hba = (tmp_path / "etc-postgresql/15/main/pg_hba.conf").read_text().splitlines()
    assert hba[:2] == [
        "host all postgres 127.0.0.1/32 trust",
        "host all postgres ::1/128 trust",
    ]
    assert "host all all 127.0.0.1/32 scram-sha-256" in hba
    assert any(call.startswith("pg_ctlcluster --skip-systemctl-redirect 15 main reload")
               for call in calls)  # fmt: skip
    assert "PostgreSQL and RabbitMQ ready" in first.stdout

    # Run again: everything is there, nothing is installed or rewritten.
    (tmp_path / "calls").write_text("")
    second = _run(env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert not any(c.startswith("apt-get") for c in (tmp_path / "calls").read_text().splitlines())
    assert (tmp_path / "etc-postgresql/15/main/pg_hba.conf").read_text().count("trust") == 2


def test_an_existing_installation_is_left_alone(tmp_path: Path) -> None:
    env = _sandbox(tmp_path, installed=("postgresql", "rabbitmq-server"))
    hba = tmp_path / "etc-postgresql/15/main/pg_hba.conf"
    before = hba.read_text()
    result = _run(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(c.startswith("apt-get") for c in (tmp_path / "calls").read_text().splitlines())
    assert hba.read_text() == before  # an operator's configuration is not touched


def test_only_the_missing_one_is_installed(tmp_path: Path) -> None:
    env = _sandbox(tmp_path, installed=("postgresql",))
    result = _run(env)
    assert result.returncode == 0, result.stdout + result.stderr
    installs = [
        call for call in (tmp_path / "calls").read_text().splitlines()
        if call.startswith("apt-get install")
    ]  # fmt: skip
    assert len(installs) == 1
    assert installs[0].endswith(" rabbitmq-server")
