"""An OAuth 2.0 token endpoint for the benchmark (client credentials grant, RFC 6749 §4.4).

It runs in a thread of the harness on 127.0.0.1 and counts the tokens it issues, per client.
A client's secret is derived from its id and the run's seed
(:func:`bench.receiver.derive_client_secret`), and so is its token
(:func:`bench.receiver.issue_token`): the benchmark receiver checks the ``Authorization``
header of ``bearer`` paths without asking the token server.  The client authenticates with
HTTP Basic (``client_secret_basic``) or in the form (``client_secret_post``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import threading
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

from bench.receiver import DEFAULT_SEED, derive_client_secret, issue_token

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path, not a secret


class TokenServer:
    """The token endpoint, started with :meth:`start` (or ``with``), stopped with :meth:`stop`."""

    def __init__(self, *, seed: str = DEFAULT_SEED, lifetime_seconds: int = 3600) -> None:
        self.seed = seed
        self.lifetime_seconds = lifetime_seconds
        self.issued: Counter[str] = Counter()  # tokens issued, by client id
        self.refused = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The token URL."""
        if self._server is None:
            raise RuntimeError("the token server is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}{TOKEN_PATH}"

    @property
    def issued_total(self) -> int:
        """Tokens issued so far, to every client."""
        with self._lock:
            return sum(self.issued.values())

    def start(self) -> TokenServer:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bench-token-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def grant(self, authorization: str, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        """The answer to one token request: its status and JSON body."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        client_id, secret = _basic_credentials(authorization)
        if client_id is None:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        expected = derive_client_secret(self.seed, client_id or "")
        if not client_id or not secret or not hmac.compare_digest(secret, expected):
            with self._lock:
                self.refused += 1
            return 401, {"error": "invalid_client"}
        token = issue_token(self.seed, client_id, secrets.token_urlsafe(12))
        with self._lock:
            self.issued[client_id] += 1
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.lifetime_seconds,
        }


def _basic_credentials(authorization: str) -> tuple[str | None, str | None]:
    """Client id and secret of an ``Authorization: Basic`` header (RFC 6749 §2.3.1: both
    form-encoded before they were joined)."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None, None
    return unquote(client_id), unquote(secret)


def _handler(tokens: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace")
            body: dict[str, object]
            if self.path.split("?", 1)[0] != TOKEN_PATH:
                status, body = 404, {"error": "not_found"}
            else:
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                status, body = tokens.grant(self.headers.get("Authorization", ""), form)
            payload = json.dumps(body).encode()
            self.send_response(HTTPStatus(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the harness prints its own progress."""

    return Handler
