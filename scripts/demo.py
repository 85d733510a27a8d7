"""The demo flow of `make run`: one person created in the people app becomes a signed webhook.

It waits for the management API (8000) and the people producer (8001), then, as an operator
would with curl:

1. finds or creates the application ``demo`` and an API token for it (kept in var/demo/);
2. subscribes the demo receiver (http://127.0.0.1:8002/webhook) to the person.* events;
3. creates a person through the people API, which fires ``person.created``;
4. follows the message until the platform has delivered it, then stays alive (honcho stops
   every process of `make run` when one exits).

Everything it does is printed in plain words.  Run it again: it reuses what exists.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import requests

API = os.environ.get("WEBHOOKS_DEMO_API", "http://127.0.0.1:8000")
PRODUCER = os.environ.get("WEBHOOKS_DEMO_PRODUCER", "http://127.0.0.1:8001")
RECEIVER_URL = os.environ.get("WEBHOOKS_DEMO_RECEIVER", "http://127.0.0.1:8002/webhook")
STATE = Path(os.environ.get("WEBHOOKS_DEMO_STATE", "var/demo"))
APP_UID = "demo"
EVENT_TYPES = ["person.created", "person.deleted", "person.updated"]
TIMEOUT = 10


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def wait_for(name: str, url: str, deadline: float = 120.0) -> None:
    say(f"waiting for the {name} at {url} ...")
    stop = time.monotonic() + deadline
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                say(f"the {name} is up")
                return
        except requests.RequestException:
            pass
        if time.monotonic() > stop:
            raise SystemExit(f"demo: the {name} did not come up at {url}")
        time.sleep(0.5)


def call(method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)


def find_or_create_application(admin: str) -> str:
    created = call(
        "POST", f"{API}/api/v1/applications", admin, json={"name": "Demo", "uid": APP_UID}
    )
    if created.status_code == 201:
        say(f"created the application 'demo' (id {created.json()['id']})")
        return str(created.json()["id"])
    iterator = None
    while True:
        params = {"limit": 250, **({"iterator": iterator} if iterator else {})}
        page = call("GET", f"{API}/api/v1/applications", admin, params=params)
        page.raise_for_status()
        for app in page.json()["data"]:
            if app.get("uid") == APP_UID:
                say(f"found the application 'demo' (id {app['id']})")
                return str(app["id"])
        if page.json()["done"]:
            raise SystemExit(f"demo: cannot create the demo application: {created.text}")
        iterator = page.json()["iterator"]


def write_private(path: Path, text: str) -> None:
    """Write a credential readable by its owner only (0600), never for a moment by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        os.fchmod(stream.fileno(), 0o600)  # a file left by an older run may be 0644
        stream.write(text)


def application_token(admin: str, app_id: str) -> str:
    saved = STATE / "token"
    if saved.exists():
        token = saved.read_text().strip()
        if call("GET", f"{API}/api/v1/applications/{app_id}", token).status_code == 200:
            say(f"reusing the demo application's API token from {saved}")
            return token
    issued = call(
        "POST", f"{API}/api/v1/applications/{app_id}/tokens", admin, json={"name": "demo"}
    )
    issued.raise_for_status()
    token = str(issued.json()["token"])
    write_private(saved, token + "\n")
    say(f"issued an API token for the demo application (saved in {saved})")
    return token


def subscribe_receiver(token: str, app_id: str) -> str:
    response = call(
        "POST",
        f"{API}/api/v1/applications/{app_id}/endpoints",
        token,
        json={
            "url": RECEIVER_URL,
            "event_types": EVENT_TYPES,
            "description": "the demo receiver of make run",
        },
    )
    if response.status_code not in (200, 201):
        raise SystemExit(f"demo: cannot subscribe the receiver: {response.text}")
    endpoint_id = str(response.json()["id"])
    verb = "subscribed" if response.status_code == 201 else "already subscribed"
    say(f"{verb} {RECEIVER_URL} to {', '.join(EVENT_TYPES)} (endpoint {endpoint_id})")
    secret = call(
        "GET", f"{API}/api/v1/applications/{app_id}/endpoints/{endpoint_id}/secret", token
    )
    if secret.status_code == 200:
        write_private(STATE / "endpoint-secret", secret.json()["key"] + "\n")
        say(f"its signing secret is in {STATE / 'endpoint-secret'} (to verify webhook-signature)")
    return endpoint_id


def create_person() -> str:
    say(f"creating a person through the people API ({PRODUCER}/people) ...")
    response = requests.post(
        f"{PRODUCER}/people",
        json={"name": "Ada Lovelace", "email": "ada@example.com"},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    person = response.json()
    say(
        f"created {person['name']} (id {person['id']}); the change and its person.created event "
        f"{person['event_id']} were committed together in the producer's outbox"
    )
    say("the outbox relay publishes it to RabbitMQ; the worker stores it and fans it out")
    return str(person["event_id"])


def follow(token: str, app_id: str, event_id: str, deadline: float = 60.0) -> None:
    url = f"{API}/api/v1/applications/{app_id}/messages/{event_id}"
    stop = time.monotonic() + deadline
    seen_stored = False
    while time.monotonic() < stop:
        response = call("GET", url, token)
        if response.status_code == 200:
            if not seen_stored:
                say(f"the platform stored message {event_id}")
                seen_stored = True
            states = _delivery_states(response.json())
            if states and all(state == "delivered" for state in states):
                say(f"delivered to the receiver at {RECEIVER_URL}, signed (Standard Webhooks)")
                return
        time.sleep(0.5)
    if seen_stored:
        say("the message is stored; its delivery has not succeeded yet (is the receiver up?)")
    else:
        say(f"message {event_id} is not visible yet; check the outbox-relay and worker logs")


def _delivery_states(message: dict[str, Any]) -> list[str]:
    deliveries = message.get("deliveries") or []
    return [str(item.get("state")) for item in deliveries if isinstance(item, dict)]


def main() -> int:
    admin = os.environ.get("WEBHOOKS_ADMIN_TOKEN")
    if not admin:
        print("demo: set WEBHOOKS_ADMIN_TOKEN (make run sets a demo one)", file=sys.stderr)
        return 2
    wait_for("management API", API)
    wait_for("people producer", PRODUCER)
    app_id = find_or_create_application(admin)
    token = application_token(admin, app_id)
    subscribe_receiver(token, app_id)
    event_id = create_person()
    follow(token, app_id, event_id)
    say(
        f"try it yourself: curl -X POST {PRODUCER}/people -H 'Content-Type: application/json' "
        '-d \'{"name": "Grace Hopper"}\''
    )
    say("demo done; staying alive so that honcho keeps the stack running (Ctrl-C stops it)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(0) from None
