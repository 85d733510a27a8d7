"""The demo receiver of ``make run``: ``python -m delivery.receiver`` on 127.0.0.1:8002.

It verifies every webhook the way a real receiver should (Standard Webhooks: the signature
over ``{webhook-id}.{webhook-timestamp}.{body}``, timestamp within five minutes, any one
signature may match: ``v1`` HMAC-SHA256 with a ``whsec_`` secret, ``v1a`` Ed25519 with a
``whpk_`` public key), prints the verified ones readably, remembers ``webhook-id``s to show
duplicates (at-least-once delivery), and answers 401 to anything it cannot verify.
Opened in a browser (a GET on the webhook path or ``/``), it shows a page listing the latest
webhooks it received, verified or not, newest first (it refreshes itself every 5 s).

Where the keys come from (all of them are tried; a ``whsec_`` secret or a ``whpk_`` key each):

* ``--secret`` (or ``WEBHOOKS_RECEIVER_SECRET``);
* ``--secret-file`` (default ``var/demo/endpoint-secret``, written by ``scripts/demo.py``),
  read again whenever a signature does not verify, so a rotation is picked up;
* the management API (``--api``, with ``WEBHOOKS_ADMIN_TOKEN``): for every endpoint whose URL
  points at this receiver, its secrets when it signs ``v1`` and its public keys when it signs
  ``v1a`` (the current ones and those still signing in their grace period).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import threading
import time
import urllib.request
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from webhooks_core.signing import verify_with

TOLERANCE_SECONDS = 300
_REFRESH_SECONDS = 2.0
# How many received webhooks the browser page lists.
PAGE_SIZE = 50


@dataclass(frozen=True)
class Received:
    """One webhook as the page lists it."""

    at: datetime
    webhook_id: str
    event_type: str
    verified: bool
    times: int
    body: str


def render_page(path: str, received: list[Received]) -> str:
    """The HTML page listing ``received`` (newest first)."""
    rows = []
    for item in received:
        verdict = (
            '<span class="ok">verified</span>'
            if item.verified
            else '<span class="bad">rejected: signature did not verify</span>'
        )
        repeat = f" (received {item.times} times: a retry)" if item.times > 1 else ""
        rows.append(
            "<tr>"
            f"<td>{item.at:%Y-%m-%d %H:%M:%S} UTC</td>"
            f"<td><code>{html.escape(item.webhook_id)}</code>{html.escape(repeat)}</td>"
            f"<td>{html.escape(item.event_type)}</td><td>{verdict}</td>"
            f"<td><pre>{html.escape(item.body)}</pre></td>"
            "</tr>"
        )
    table = (
        "<table><thead><tr><th>Received</th><th>webhook-id</th><th>Type</th><th>Signature</th>"
        f"<th>Body</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>Nothing received yet. Deliveries to this URL will be listed here.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="5"><title>Demo receiver</title><style>'
        "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330}"
        "table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;"
        "padding:.4rem .6rem;border-bottom:1px solid #e2e5eb}"
        "pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;max-width:40rem}"
        ".ok{color:#147a3d;font-weight:600}.bad{color:#b3261e;font-weight:600}"
        "</style></head><body><h1>Demo receiver</h1>"
        f"<p>Webhooks are POSTed to <code>{html.escape(path)}</code> and verified with the"
        " endpoint's secret or public key (Standard Webhooks v1, v1a). The latest"
        f" {PAGE_SIZE}, newest first; this page refreshes every 5 s.</p>"
        f"{table}</body></html>"
    )


class SecretSource:
    """The secrets and public keys to verify with, refreshed (at most every 2 s) when none do."""

    def __init__(
        self, *, secret: str | None, secret_file: Path, api: str, admin_token: str | None, url: str
    ) -> None:
        self.fixed = [secret] if secret else []
        self.secret_file = secret_file
        self.api = api.rstrip("/")
        self.admin_token = admin_token
        self.url = url
        self.secrets: list[str] = list(self.fixed)
        self._refreshed = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> list[str]:
        """Read the secret file and ask the API again; returns the secrets now known."""
        with self._lock:
            if time.monotonic() - self._refreshed < _REFRESH_SECONDS:
                return self.secrets
            self._refreshed = time.monotonic()
            found = list(self.fixed)
            if self.secret_file.is_file():
                found += [s for s in self.secret_file.read_text().split() if s]
            if self.admin_token:
                try:
                    found += self._from_api()
                except OSError as exc:
                    print(f"receiver: cannot ask the API for secrets: {exc}", file=sys.stderr)
            self.secrets = list(dict.fromkeys(found))
            return self.secrets

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the local management API
            self.api + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return json.load(response)

    def _from_api(self) -> list[str]:
        secrets: list[str] = []
        for app in self._get("/api/v1/applications?limit=250")["data"]:
            endpoints = self._get(f"/api/v1/applications/{app['id']}/endpoints?limit=250")
            for endpoint in endpoints["data"]:
                if endpoint["url"].rstrip("/") != self.url.rstrip("/"):
                    continue
                where = f"/api/v1/applications/{app['id']}/endpoints/{endpoint['id']}"
                schemes = endpoint.get("signature_schemes") or ["v1"]
                if "v1" in schemes:
                    secret = self._get(f"{where}/secret")
                    secrets.append(secret["key"])
                    secrets += [previous["key"] for previous in secret["previous"]]
                if "v1a" in schemes:
                    public = self._get(f"{where}/signing-key")
                    secrets.append(public["public_key"])
                    secrets += [previous["public_key"] for previous in public["previous"]]
        return secrets


def verified(secrets: list[str], headers: Any, body: bytes) -> bool:
    """True when the headers carry a fresh timestamp and a signature by one of ``secrets``.

    ``secrets`` holds ``whsec_`` secrets (``v1``) and ``whpk_`` public keys (``v1a``).
    """
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature")
    if not msg_id or not signature or not stamp.isdigit():
        return False
    if abs(time.time() - int(stamp)) > TOLERANCE_SECONDS:
        return False
    return any(verify_with(key, msg_id, int(stamp), body, signature) for key in secrets)


def make_handler(source: SecretSource, path: str) -> type[BaseHTTPRequestHandler]:
    """The request handler class, bound to a secret source and the webhook path."""
    seen: OrderedDict[str, int] = OrderedDict()
    received: deque[Received] = deque(maxlen=PAGE_SIZE)
    received_lock = threading.Lock()

    def remember(webhook_id: str, event_type: str, ok: bool, times: int, body: str) -> None:
        with received_lock:
            received.appendleft(
                Received(datetime.now(UTC), webhook_id, event_type, ok, times, body[:4096])
            )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, text: str, content_type: str = "text/plain") -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            """A browser's visit: the page of what was received."""
            if self.path.split("?")[0] not in (path, "/"):
                self._answer(404, "not found: the received webhooks are listed at " + path)
                return
            with received_lock:
                listed = list(received)
            self._answer(200, render_page(path, listed), "text/html")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 1_048_576))
            if self.path.split("?")[0] != path:
                self._answer(404, "not a webhook path")
                return
            if not (
                verified(source.secrets, self.headers, body)
                or verified(source.refresh(), self.headers, body)
            ):
                print(f"✗ rejected a webhook on {path}: signature did not verify", flush=True)
                remember(
                    self.headers.get("webhook-id") or "-",
                    "-",
                    False,
                    1,
                    body.decode(errors="replace"),
                )
                self._answer(401, "signature did not verify")
                return
            msg_id = self.headers["webhook-id"]
            seen[msg_id] = seen.get(msg_id, 0) + 1
            seen.move_to_end(msg_id)
            while len(seen) > 10_000:
                seen.popitem(last=False)
            try:
                event = json.loads(body)
            except ValueError:
                event = {"raw": body.decode(errors="replace")}
            data = event.get("data", event) if isinstance(event, dict) else event
            pretty = json.dumps(data, indent=2, ensure_ascii=False)
            event_type = str(event.get("type")) if isinstance(event, dict) else "-"
            stamp = event.get("timestamp") if isinstance(event, dict) else None
            remember(msg_id, event_type, True, seen[msg_id], pretty)
            repeat = f"  (received {seen[msg_id]} times: a retry)" if seen[msg_id] > 1 else ""
            print(
                f"✓ verified webhook {msg_id}: {event_type} at {stamp}{repeat}\n{pretty}",
                flush=True,
            )
            self._answer(200, "ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the verified line above is the log

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Parse the options and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--path", default="/webhook")
    parser.add_argument("--secret", default=os.environ.get("WEBHOOKS_RECEIVER_SECRET"))
    parser.add_argument("--secret-file", type=Path, default=Path("var/demo/endpoint-secret"))
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    # The operator's token, to read the endpoint's secret from the API (the API's own
    # WEBHOOKS_ADMIN_TOKEN, as ``make run`` and docker-compose set it for every process).
    parser.add_argument("--admin-token", default=os.environ.get("WEBHOOKS_ADMIN_TOKEN"))
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), BaseHTTPRequestHandler)
    url = f"http://{args.host}:{server.server_address[1]}{args.path}"
    source = SecretSource(
        secret=args.secret,
        secret_file=args.secret_file,
        api=args.api,
        admin_token=args.admin_token,
        url=url,
    )
    server.RequestHandlerClass = make_handler(source, args.path)
    server.daemon_threads = True
    print(f"receiver: listening on {url}, verifying Standard Webhooks signatures", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
