"""The demo receiver of ``make run``: ``python -m delivery.receiver`` on 127.0.0.1:8002.

It verifies every webhook the way a real receiver should (Standard Webhooks: HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}``, timestamp within five minutes, any of the
``v1`` signatures may match), prints the verified ones readably, remembers ``webhook-id``s to
show duplicates (at-least-once delivery), and answers 401 to anything it cannot verify.

Where the signing secret comes from, first match wins:

* ``--secret whsec_...`` (or ``WEBHOOKS_RECEIVER_SECRET``);
* ``--secret-file`` (default ``var/demo/endpoint-secret``, written by ``scripts/demo.py``),
  read again whenever a signature does not verify, so a rotation is picked up;
* the management API (``--api``, with ``WEBHOOKS_ADMIN_TOKEN``): the secrets of every endpoint
  whose URL points at this receiver.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from webhooks_core.settings import Settings
from webhooks_core.signing import verify

TOLERANCE_SECONDS = 300
_REFRESH_SECONDS = 2.0


class SecretSource:
    """The secrets to verify with, refreshed (at most every two seconds) when one fails."""

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
                secret = self._get(
                    f"/api/v1/applications/{app['id']}/endpoints/{endpoint['id']}/secret"
                )
                secrets.append(secret["key"])
                secrets += [previous["key"] for previous in secret["previous"]]
        return secrets


def verified(secrets: list[str], headers: Any, body: bytes) -> bool:
    """True when the headers carry a fresh timestamp and a signature by one of ``secrets``."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature")
    if not msg_id or not signature or not stamp.isdigit():
        return False
    if abs(time.time() - int(stamp)) > TOLERANCE_SECONDS:
        return False
    return any(verify(secret, msg_id, int(stamp), body, signature) for secret in secrets)


def make_handler(source: SecretSource, path: str) -> type[BaseHTTPRequestHandler]:
    """The request handler class, bound to a secret source and the webhook path."""
    seen: OrderedDict[str, int] = OrderedDict()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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
            repeat = f"  (received {seen[msg_id]} times: a retry)" if seen[msg_id] > 1 else ""
            print(
                f"✓ verified webhook {msg_id}: {event.get('type')} at {event.get('timestamp')}"
                f"{repeat}\n{json.dumps(event.get('data', event), indent=2, ensure_ascii=False)}",
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
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    server = ThreadingHTTPServer((args.host, args.port), BaseHTTPRequestHandler)
    url = f"http://{args.host}:{server.server_address[1]}{args.path}"
    source = SecretSource(
        secret=args.secret,
        secret_file=args.secret_file,
        api=args.api,
        admin_token=settings.admin_token,
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
