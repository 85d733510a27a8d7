"""Secrets sealed at rest: the key ring, rotation by resealing, the migration of old rows."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.endpoints import sealing
from webhooks_core.endpoints.sealing import KeyRing, KeyRingError, SealingError
from webhooks_core.settings import Settings, SettingsError
from webhooks_core.signing import new_secret

OLD = "old:" + base64.b64encode(b"o" * 32).decode()
NEW = "new:" + base64.urlsafe_b64encode(b"n" * 32).decode().rstrip("=")


def test_seal_round_trips_with_the_key_id_and_a_fresh_nonce_each_time() -> None:
    ring = KeyRing.parse(f"{NEW},{OLD}")
    secret = new_secret()
    first, second = ring.seal(secret), ring.seal(secret)
    assert first.startswith("sealed:v1:new:")
    assert secret not in first
    assert first != second  # a fresh nonce: equal secrets do not look equal at rest
    assert ring.unseal(first) == ring.unseal(second) == secret
    assert sealing.key_id_of(first) == "new"
    assert ring.is_current(first)
    # The old key still opens what it sealed; the new one seals.
    old_value = KeyRing.parse(OLD).seal("s3cret")
    assert ring.unseal(old_value) == "s3cret"
    assert not ring.is_current(old_value)


def test_tampered_moved_or_unknown_values_do_not_open() -> None:
    ring = KeyRing.parse(f"{NEW},{OLD}")
    stored = ring.seal("s3cret")
    flipped = stored[:-2] + ("A" if stored[-2] != "A" else "B") + stored[-1]
    with pytest.raises(SealingError, match="does not open"):
        ring.unseal(flipped)
    # The key id is authenticated: relabelling a value as another key's fails.
    moved = stored.replace("sealed:v1:new:", "sealed:v1:old:")
    with pytest.raises(SealingError, match="does not open"):
        ring.unseal(moved)
    with pytest.raises(SealingError, match="does not hold"):
        KeyRing.parse(OLD).unseal(stored)
    with pytest.raises(SealingError, match="not a sealed value"):
        ring.unseal("whsec_plain")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "holds no key"),
        ("nokeyid", "<id>:<base64"),
        ("k1:!!!", "not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "not 32 bytes"),
        (f"{OLD},{OLD}", "appears twice"),
        ("bad id:" + base64.b64encode(b"k" * 32).decode(), "is not 1-32"),
    ],
)
def test_malformed_key_specs_are_refused_with_a_message(spec: str, message: str) -> None:
    with pytest.raises(KeyRingError, match=message):
        KeyRing.parse(spec)


def test_settings_refuse_bad_keys_at_start_and_name_what_to_set_when_missing() -> None:
    with pytest.raises(SettingsError, match="WEBHOOKS_SEALING_KEYS"):
        Settings.from_env(sealing_keys="k1:notakey")
    with pytest.raises(SettingsError, match="new-key"):
        KeyRing.from_settings(Settings.from_env(sealing_keys=None))
    settings = Settings.from_env(sealing_keys=f"{NEW},{OLD}")
    assert KeyRing.from_settings(settings).key_ids == ("new", "old")
    assert OLD.split(":")[1] not in repr(settings)  # a SecretStr: never printed


def test_new_key_makes_a_usable_key() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "webhooks_core.endpoints.sealing", "new-key"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert len(base64.b64decode(out)) == 32
    assert KeyRing.parse(f"k:{out}").unseal(KeyRing.parse(f"k:{out}").seal("x")) == "x"


def _insert_secret(conn: object, stored: str) -> uuid.UUID:
    app_id, endpoint_id, secret_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn.execute(  # type: ignore[attr-defined]
        text("INSERT INTO applications (id, name) VALUES (:id, :name)"),
        {"id": app_id, "name": f"app-{app_id}"},
    )
    conn.execute(  # type: ignore[attr-defined]
        text("INSERT INTO endpoints (id, application_id, url) VALUES (:id, :app, 'http://x/')"),
        {"id": endpoint_id, "app": app_id},
    )
    conn.execute(  # type: ignore[attr-defined]
        text("INSERT INTO endpoint_secrets (id, endpoint_id, secret) VALUES (:id, :e, :s)"),
        {"id": secret_id, "e": endpoint_id, "s": stored},
    )
    return secret_id


def test_reseal_moves_every_value_to_the_newest_key_and_keeps_each_secret(
    engine: Engine, db: sessionmaker[Session]
) -> None:
    old_ring, rotated = KeyRing.parse(OLD), KeyRing.parse(f"{NEW},{OLD}")
    plain = {f"whsec_{n}": None for n in range(7)}
    with engine.begin() as conn:
        ids = {_insert_secret(conn, old_ring.seal(p)): p for p in plain}
        ids[_insert_secret(conn, "whsec_written_before_sealing")] = "whsec_written_before_sealing"
        conn.execute(
            text("UPDATE endpoints SET auth = :a WHERE id = (SELECT id FROM endpoints LIMIT 1)"),
            {"a": old_ring.seal('{"type":"bearer","token":"tok"}')},
        )

    assert sealing.reseal(engine, rotated, batch_size=3) == len(ids) + 1
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT id, secret FROM endpoint_secrets")).all())
        auth = conn.scalar(text("SELECT auth FROM endpoints WHERE auth IS NOT NULL"))
    assert all(rotated.is_current(value) for value in stored.values())
    assert {key: rotated.unseal(value) for key, value in stored.items()} == ids
    assert KeyRing.parse(NEW).unseal(auth) == '{"type":"bearer","token":"tok"}'
    # Nothing left under the old key: the old key can go, and a second run does nothing.
    assert sealing.reseal(engine, rotated) == 0


def test_reseal_command_uses_the_environment_keys(
    engine: Engine, db: sessionmaker[Session], settings: Settings
) -> None:
    with engine.begin() as conn:
        secret_id = _insert_secret(conn, KeyRing.parse(OLD).seal("whsec_cmd"))
    env = {
        **os.environ,
        "WEBHOOKS_DATABASE_URL": settings.database_url,
        "WEBHOOKS_SEALING_KEYS": f"{NEW},{OLD}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "webhooks_core.endpoints.sealing", "reseal"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "1 values now sealed under key 'new'" in done.stdout
    with engine.connect() as conn:
        stored = conn.scalar(
            text("SELECT secret FROM endpoint_secrets WHERE id = :id"), {"id": secret_id}
        )
    assert KeyRing.parse(NEW).unseal(stored) == "whsec_cmd"
    env["WEBHOOKS_SEALING_KEYS"] = ""
    refused = subprocess.run(
        [sys.executable, "-m", "webhooks_core.endpoints.sealing", "reseal"],
        env={k: v for k, v in env.items() if k != "WEBHOOKS_SEALING_KEYS"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "WEBHOOKS_SEALING_KEYS is not set" in refused.stderr


def test_the_background_loop_reseals_until_stopped(
    engine: Engine, db: sessionmaker[Session]
) -> None:
    import threading

    with engine.begin() as conn:
        secret_id = _insert_secret(conn, KeyRing.parse(OLD).seal("whsec_loop"))
    stop = threading.Event()
    rotated = KeyRing.parse(f"{NEW},{OLD}")
    thread = threading.Thread(
        target=sealing.reseal_periodically, args=(engine, rotated, 0.05, stop), daemon=True
    )
    thread.start()
    try:
        for _ in range(100):
            with engine.connect() as conn:
                stored = conn.scalar(
                    text("SELECT secret FROM endpoint_secrets WHERE id = :id"), {"id": secret_id}
                )
            if rotated.is_current(stored):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(5)
    assert rotated.is_current(stored)
    assert rotated.unseal(stored) == "whsec_loop"
    assert not thread.is_alive()


def test_reseal_tells_key_ids_apart_exactly(engine: Engine, db: sessionmaker[Session]) -> None:
    # "_" is a LIKE wildcard: a value under "kx1" must not pass for one under "k_1".
    lookalike = "kx1:" + base64.b64encode(b"x" * 32).decode()
    current = "k_1:" + base64.b64encode(b"y" * 32).decode()
    with engine.begin() as conn:
        _insert_secret(conn, KeyRing.parse(lookalike).seal("whsec_lookalike"))
    ring = KeyRing.parse(f"{current},{lookalike}")
    assert sealing.reseal(engine, ring) == 1
    with engine.connect() as conn:
        stored = conn.scalar(text("SELECT secret FROM endpoint_secrets"))
    assert sealing.key_id_of(stored) == "k_1"
