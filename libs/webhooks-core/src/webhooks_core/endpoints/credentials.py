"""An endpoint's credentials: its auth setting and its sensitive custom headers, sealed.

* ``auth`` is ``{"type": "basic", "username", "password"}`` or ``{"type": "bearer",
  "token"}``; stored sealed (one JSON document in ``endpoints.auth``), sent as the request's
  ``Authorization`` header, shown back masked (:func:`masked_auth`).
* A custom header whose name says it carries a credential (:func:`is_sensitive_header`:
  ``Authorization``, ``Cookie``, names with ``token``, ``secret``, ``key``, ``auth``,
  ``password``...) is stored sealed in ``endpoints.sealed_headers``, not in the plain
  ``headers`` column, and shown back masked.

Sealing is :mod:`webhooks_core.endpoints.sealing`.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from webhooks_core.endpoints import sealing

AUTH_TYPES = ("basic", "bearer")
_SENSITIVE_NAMES = frozenset({"authorization", "proxy-authorization", "cookie"})
_SENSITIVE_PARTS = re.compile(r"token|secret|key|auth|passw|credential|session|signature", re.I)
MASK = "********"
_HINT_MIN_LENGTH = 16


def is_sensitive_header(name: str) -> bool:
    """True when a custom header named ``name`` carries a credential (stored sealed)."""
    return name.lower() in _SENSITIVE_NAMES or bool(_SENSITIVE_PARTS.search(name))


def mask(value: str) -> str:
    """A credential as the API shows it: never in full, the last 4 characters of a long one."""
    return MASK + value[-4:] if len(value) >= _HINT_MIN_LENGTH else MASK


def split_headers(headers: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``headers`` as (plain, sensitive): the second part is stored sealed."""
    plain = {k: v for k, v in headers.items() if not is_sensitive_header(k)}
    sensitive = {k: v for k, v in headers.items() if is_sensitive_header(k)}
    return plain, sensitive


def seal_json(document: dict[str, Any] | None) -> str | None:
    """A JSON document sealed (None or empty stays None)."""
    return sealing.seal(json.dumps(document, separators=(",", ":"))) if document else None


def unseal_json(stored: str | None) -> dict[str, Any]:
    """The document :func:`seal_json` stored (an empty one for None)."""
    if stored is None:
        return {}
    document = json.loads(sealing.unseal(stored))
    if not isinstance(document, dict):
        raise sealing.SealingError("a sealed document is not an object")
    return document


def shown_headers(plain: dict[str, str] | None, sealed_headers: str | None) -> dict[str, str]:
    """Every custom header as the API shows it: the sensitive ones masked.

    ``plain`` may be None: earlier versions could store JSON null (read as no headers).
    """
    shown = dict(plain or {})
    shown.update({k: mask(v) for k, v in unseal_json(sealed_headers).items()})
    return shown


def masked_auth(stored: str | None) -> dict[str, str] | None:
    """The auth setting as the API shows it: the type, the username, the secret masked."""
    auth = unseal_json(stored)
    if not auth:
        return None
    if auth["type"] == "basic":
        return {"type": "basic", "username": auth["username"], "password": mask(auth["password"])}
    return {"type": "bearer", "token": mask(auth["token"])}


def keep_masked(auth: dict[str, Any] | None, stored: str | None) -> dict[str, Any] | None:
    """``auth`` with a secret sent back masked (as shown) replaced by the stored one."""
    if not auth:
        return None
    auth = dict(auth)
    previous = unseal_json(stored)
    if previous.get("type") == auth["type"]:
        secret = "password" if auth["type"] == "basic" else "token"
        if auth.get(secret) == mask(previous[secret]):
            auth[secret] = previous[secret]
    return auth


def header_conflict(header_names: list[str], auth: dict[str, Any] | None) -> str | None:
    """Why ``auth`` and these custom headers cannot go together, or None."""
    if auth and any(name.lower() == "authorization" for name in header_names):
        return "an Authorization custom header and auth cannot both be set; remove the header"
    return None


def authorization(auth: dict[str, Any]) -> str | None:
    """The ``Authorization`` header value of an auth setting (None for none)."""
    if not auth:
        return None
    if auth["type"] == "basic":
        pair = f"{auth['username']}:{auth['password']}".encode()
        return "Basic " + base64.b64encode(pair).decode()
    return f"Bearer {auth['token']}"


def request_headers(
    plain: dict[str, str], sealed_headers: str | None, auth: str | None
) -> dict[str, str]:
    """The custom headers a request carries: plain, unsealed sensitive ones, Authorization.

    An auth setting's ``Authorization`` wins over a custom header of that name.
    """
    headers = dict(plain)
    headers.update(unseal_json(sealed_headers))
    value = authorization(unseal_json(auth))
    if value is not None:
        for name in [k for k in headers if k.lower() == "authorization"]:
            del headers[name]
        headers["Authorization"] = value
    return headers
