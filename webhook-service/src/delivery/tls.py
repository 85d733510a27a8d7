"""An endpoint's own TLS: its client certificate (mutual TLS) and the CA bundle it trusts.

:func:`endpoint_tls` builds one :class:`ssl.SSLContext` per endpoint and credentials and
keeps it for the process (a context is costly to build, and a pool of keep-alive
connections is kept per context): the take gives the stored values on every batch, and the
cache is found by them, so new credentials take effect on the next batch.

The private key is unsealed only to load it, through an anonymous in-memory file
(``memfd_create``; a private temporary file elsewhere, removed at once): :mod:`ssl` loads
keys from files only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from webhooks_core.endpoints.authentication import unseal_secret


@dataclass(frozen=True, slots=True)
class TLSCredentials:
    """What the take read of an endpoint's TLS settings (the key still sealed)."""

    client_certificate: str | None
    sealed_client_key: str | None
    ca_bundle: str | None
    certificate_expires_at: datetime | None

    @property
    def fingerprint(self) -> str:
        """Identifies these credentials (the cache and the connection pools are keyed by it)."""
        digest = hashlib.sha256()
        for part in (self.client_certificate, self.sealed_client_key, self.ca_bundle):
            digest.update((part or "").encode("utf-8", "replace") + b"\0")
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class EndpointTLS:
    """A ready TLS context for an endpoint; ``key`` tells its pools from others'."""

    key: str
    context: ssl.SSLContext
    certificate_expires_at: datetime | None


class TLSSetupError(Exception):
    """The stored credentials cannot make a TLS context (the message says why)."""


@contextlib.contextmanager
def _pem_file(pem: str) -> Iterator[str]:
    """A path the PEM can be read from while the block runs (the key never touches a disk)."""
    data = pem.encode("ascii")
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("endpoint-pem", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as handle:  # pragma: no cover
        handle.write(data)
        handle.flush()
        yield handle.name


def build_context(credentials: TLSCredentials) -> ssl.SSLContext:
    """A client context: the CA bundle (else the system's CAs), the client certificate."""
    try:
        if credentials.ca_bundle:
            context = ssl.create_default_context(cadata=credentials.ca_bundle)
        else:
            context = ssl.create_default_context()
    except (ssl.SSLError, ValueError) as exc:
        raise TLSSetupError(f"the endpoint's CA bundle cannot be loaded ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if credentials.client_certificate and credentials.sealed_client_key:
        try:
            key_pem = unseal_secret(credentials.sealed_client_key)
        except Exception as exc:  # noqa: BLE001 - whatever sealing raises, say so plainly
            raise TLSSetupError(
                f"the endpoint's client key cannot be unsealed ({type(exc).__name__})"
            ) from None
        try:
            with (
                _pem_file(credentials.client_certificate) as cert,
                _pem_file(key_pem) as key,
            ):
                context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TLSSetupError(
                f"the endpoint's client certificate and key cannot be loaded ({exc})"
            ) from None
    return context


_contexts: dict[tuple[object, str], EndpointTLS] = {}
_lock = threading.Lock()
_MAX_CONTEXTS = 4096


def endpoint_tls(endpoint_id: object, credentials: TLSCredentials) -> EndpointTLS:
    """The endpoint's TLS context, built once per process and credentials."""
    key = (endpoint_id, credentials.fingerprint)
    found = _contexts.get(key)
    if found is not None:
        return found
    with _lock:
        found = _contexts.get(key)
        if found is None:
            if len(_contexts) >= _MAX_CONTEXTS:
                _contexts.clear()  # replaced credentials accumulate; start over
            found = EndpointTLS(
                f"{endpoint_id}:{key[1][:16]}",
                build_context(credentials),
                credentials.certificate_expires_at,
            )
            _contexts[key] = found
    return found
