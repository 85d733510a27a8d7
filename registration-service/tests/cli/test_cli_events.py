"""``webhooks send|relay|tail|replay|dead-letters`` against the running API."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from webhooks_core.db import transaction
from webhooks_core.models import DeadLetter, Delivery


def _deliveries(db) -> list[Delivery]:
    with db() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def test_send_publishes_once_per_idempotency_key(webhooks, tenant, endpoint_for, db) -> None:
    endpoint_for(tenant)
    args = ("send", "person.created", "--data", '{"id": 1, "name": "Ada"}', "-k", "order-1")
    first = webhooks(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("message msg_")
    assert first.stdout.rstrip().endswith("accepted: 1 delivery")
    again = webhooks(*args)
    assert again.exit_code == 0, again.output
    assert "(a repeat: the first result)" in again.stdout
    assert len(_deliveries(db)) == 1

    from_stdin = webhooks("send", "person.created", "--data", "-", "--json", input='{"id": 2}')
    assert from_stdin.exit_code == 0, from_stdin.output
    assert json.loads(from_stdin.stdout)["deliveries"] == 1


def test_send_reports_bad_input(webhooks, tenant, endpoint_for) -> None:
    endpoint_for(tenant)
    not_json = webhooks("send", "person.created", "--data", "{id: 1}")
    assert not_json.exit_code == 2
    assert "not valid JSON" in not_json.stderr
    bad_type = webhooks("send", "Not A Type", "--data", "{}")
    assert bad_type.exit_code == 1
    assert "422" in bad_type.stderr
    assert "event_type" in bad_type.stderr


def test_relay_sends_one_webhook_without_subscription(webhooks, db) -> None:
    result = webhooks("relay", "http://127.0.0.1:9/once", "--data", '{"hello": "world"}')
    assert result.exit_code == 0, result.output
    (delivery,) = _deliveries(db)
    assert f"delivery {delivery.id}" in result.stdout
    assert "signed with whsec_" in result.stdout
    refused = webhooks("relay", "http://169.254.169.254/latest", "--data", "{}")
    assert refused.exit_code == 1
    assert "  url: " in refused.stderr
    # Its target URL shows where deliveries are listed (the relay endpoint is in no list).
    tailed = webhooks("tail", "--since", "5m", "--timeout", "0")
    assert tailed.exit_code == 0, tailed.output
    assert f"#{delivery.id}" in tailed.stdout
    assert "-> http://127.0.0.1:9/once" in tailed.stdout


def test_tail_prints_new_deliveries_and_state_changes(
    webhooks, api_url, tenant, endpoint_for, db
) -> None:
    endpoint_for(tenant)
    # A delivery of 7 minutes ago, last changed then: tail prints that time, not its own.
    old = json.loads(webhooks("send", "person.created", "--data", "{}", "--json").stdout)["id"]
    seven_minutes_ago = datetime.now(UTC) - timedelta(minutes=7)
    with transaction(db) as session:
        session.execute(
            update(Delivery).values(created_at=seven_minutes_ago, updated_at=seven_minutes_ago)
        )
    command = [
        f"{sys.prefix}/bin/webhooks", "--api-url", api_url, "--token", tenant.token,
        "-a", str(tenant.id), "tail", "--since", "1h", "--interval", "0.3", "--timeout", "60",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    )
    reader.start()

    def wait_for(fragment: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if fragment in line:
                return line
        raise AssertionError(f"tail never printed {fragment!r}")

    try:
        first = wait_for(old)
        assert first.startswith(f"{seven_minutes_ago:%H:%M:%S}  "), first
        import requests

        from registration.services import ingest  # noqa: F401 - the API path is what is tested

        sent = requests.post(
            f"{api_url}/api/v1/applications/{tenant.id}/messages",
            json={"event_type": "person.created", "payload": {"id": 3}},
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=10,
        )
        assert sent.status_code == 202, sent.text
        created = wait_for(sent.json()["id"])
        assert " pending " in created
        assert sent.json()["id"] in created
        assert "http://127.0.0.1:9/hook" in created
        with transaction(db) as session:
            session.execute(
                update(Delivery).values(
                    state="retrying", attempt_count=1, last_status_code=503, last_error="HTTP 503"
                )
            )
        retrying = wait_for(f"{sent.json()['id']}  -> ")
        assert " retrying " in retrying
        assert "attempt 1, HTTP 503" in retrying
        with transaction(db) as session:
            session.execute(update(Delivery).values(state="delivered", attempt_count=2,
                                                    last_status_code=200))  # fmt: skip
        assert "HTTP 200" in wait_for(" delivered ")
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)
        process.stdout.close()
        process.stderr.close()


def test_replay_an_endpoint_a_delivery_a_message(
    webhooks, tenant, endpoint_for, db, dead_letter
) -> None:
    endpoint_id = endpoint_for(tenant)
    sent = webhooks("send", "person.created", "--data", "{}", "--json")
    event_id = json.loads(sent.stdout)["id"]
    (delivery,) = _deliveries(db)
    dead_letter(delivery.id)

    recovered = webhooks("replay", "--endpoint", str(endpoint_id), "--since", "1h")
    assert recovered.exit_code == 0, recovered.output
    assert "1 delivery requeued" in recovered.stdout
    assert _deliveries(db)[0].state == "pending"

    again = webhooks("replay", "--delivery", str(delivery.id))
    assert again.exit_code == 0, again.output
    assert "0 deliveries requeued" in again.stdout
    assert "already pending" in again.stderr

    with transaction(db) as session:
        session.execute(update(Delivery).values(state="delivered"))
    message = webhooks("replay", "--message", event_id)
    assert message.exit_code == 0, message.output
    assert "1 delivery requeued" in message.stdout

    assert webhooks("replay", "--endpoint", str(endpoint_id)).exit_code == 2
    assert webhooks("replay").exit_code == 2
    missing = webhooks("replay", "--delivery", "999999")
    assert missing.exit_code == 1
    assert "404" in missing.stderr


def test_dead_letters_list_and_redrive_with_progress(
    webhooks, tenant, endpoint_for, db, dead_letter
) -> None:
    endpoint_for(tenant)
    for number in range(3):
        webhooks("send", "person.created", "--data", json.dumps({"id": number}))
    letters = [dead_letter(delivery.id) for delivery in _deliveries(db)]

    listed = webhooks("dead-letters", "list")
    assert listed.exit_code == 0, listed.output
    rows = listed.stdout.splitlines()[1:]
    assert sorted(int(row.split()[0]) for row in rows) == sorted(letters)
    assert all("retries exhausted after 8 attempts" in row for row in rows)
    assert all(row.endswith("http://127.0.0.1:9/hook") for row in rows)

    one = webhooks("dead-letters", "redrive", str(letters[0]))
    assert one.exit_code == 0, one.output
    assert "redrove 1 of 1 dead letters: 1 delivery requeued" in one.stdout

    rest = webhooks("dead-letters", "redrive", "--all")
    assert rest.exit_code == 0, rest.output
    assert "redrove 2 of 2 dead letters: 2 deliveries requeued" in rest.stdout
    assert "redriving" in rest.stderr  # the progress bar's label (it animates on a terminal)
    assert {d.state for d in _deliveries(db)} == {"pending"}
    with db() as session:
        assert all(dl.redriven_at for dl in session.scalars(select(DeadLetter)))

    assert webhooks("dead-letters", "redrive", "--all").stdout.strip() == "no open dead letters"
    unknown = webhooks("dead-letters", "redrive", "424242")
    assert unknown.exit_code == 1
    assert "dead letter 424242: 404 Not found" in unknown.stderr
    assert webhooks("dead-letters", "redrive").exit_code == 2
