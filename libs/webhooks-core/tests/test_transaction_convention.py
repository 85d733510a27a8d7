"""``src/`` opens transactions one way: ``webhooks_core.db.run_transaction`` (no database).

A transaction opened another way would escape the lost-connection policy.  The exceptions
are named here with the reason: ``db.py`` itself, the delivery engine's batch connection
(it holds the batch's session-level lock across its transactions), and Alembic's
environments.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [
    ROOT / "libs/webhooks-core/src",
    ROOT / "registration-service/src",
    ROOT / "webhook-service/src",
    ROOT / "event-producer/src",
]
ALLOWED = {
    "webhooks_core/db.py",
    "delivery/batch_take.py",
    "webhooks_core/migrations/env.py",
    "producer/migrations/env.py",
}
# Other ways to open a transaction or take a connection from an engine.
OTHER_WAYS = re.compile(
    r"\bwith \w+\(\) as session\b"  # a session of a factory, committed by hand or not at all
    r"|\bwith transaction\("  # the tests' helper
    r"|\.begin\(\)"  # Session.begin / sessionmaker.begin / Engine.begin / Connection.begin
    r"|engine\.connect\(\)"
    r"|\.commit\(\)|\.rollback\(\)"
    r"|\bpool_pre_ping=True"
)


def test_src_opens_transactions_only_through_run_transaction() -> None:
    found = []
    for source in SOURCES:
        for path in source.rglob("*.py"):
            relative = path.relative_to(source).as_posix()
            if relative in ALLOWED:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if OTHER_WAYS.search(line) and "super().begin()" not in line:
                    found.append(f"{relative}:{number}: {line.strip()}")
    assert found == []


def test_the_rule_sees_what_it_forbids() -> None:
    for line in [
        "with sessions() as session:",
        "with transaction(sessions) as session:",
        "with engine.begin() as conn:",
        "with self._engine.connect() as conn:",
        "session.commit()",
        "engine = create_engine(url, pool_pre_ping=True)",
    ]:
        assert OTHER_WAYS.search(line), line
    assert not OTHER_WAYS.search("return run_transaction(sessions, work)")
