"""Checking a received webhook the way a receiver should (Standard Webhooks)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from webhooks_core import signing

_REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/\d(\.\d)?$")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Verdict:
    """Whether a request is authentic, and why not when it is not."""

    valid: bool
    reason: str
    msg_id: str | None = None
    timestamp: datetime | None = None


def parse_headers(raw: bytes) -> dict[str, str]:
    """``Name: value`` lines (an HTTP request line first is skipped); names lower-cased."""
    headers: dict[str, str] = {}
    for number, line in enumerate(raw.splitlines()):
        if number == 0 and _REQUEST_LINE.match(line.strip()):
            continue
        if not line.strip():
            continue
        name, separator, value = line.decode("latin-1").partition(":")
        if separator:
            headers[name.strip().lower()] = value.strip()
    return headers


def parse_request(raw: bytes) -> tuple[dict[str, str], bytes]:
    """A request as captured: headers, a blank line, then the body exactly as received."""
    match = _BLANK_LINE.search(raw)
    if match is None:
        return parse_headers(raw), b""
    return parse_headers(raw[: match.start()]), raw[match.end() :]


def check(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    now: datetime,
    tolerance_seconds: int | None,
) -> Verdict:
    """Verify ``webhook-signature`` over ``id.timestamp.body`` and the timestamp's freshness.

    ``secret`` is a ``whsec_`` secret (the ``v1`` signatures are checked) or a ``whpk_``
    public key (the ``v1a`` ones).
    """
    asymmetric = signing.is_valid_public_key(secret)
    if not (asymmetric or signing.is_valid_secret(secret)):
        return Verdict(
            False, "the secret is not a whsec_ secret nor a whpk_ public key (prefix + base64)"
        )
    missing = [
        name
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        if not headers.get(name)
    ]
    if missing:
        return Verdict(False, f"missing header(s): {', '.join(missing)}")
    msg_id = headers["webhook-id"]
    try:
        stamp = int(headers["webhook-timestamp"])
    except ValueError:
        return Verdict(False, "webhook-timestamp is not a number of seconds", msg_id)
    sent_at = datetime.fromtimestamp(stamp, UTC)
    if not signing.verify_with(secret, msg_id, stamp, body, headers["webhook-signature"]):
        what = "v1a signature matches this public key" if asymmetric else "signature matches"
        return Verdict(
            False,
            f"no {what}{'' if asymmetric else ' this secret'} and body (wrong secret or key, or"
            " the body was "
            "changed: verify the raw bytes, before any JSON parsing)",
            msg_id,
            sent_at,
        )
    if tolerance_seconds is not None:
        skew = abs((now - sent_at).total_seconds())
        if skew > tolerance_seconds:
            return Verdict(
                False,
                f"the signature matches but the timestamp is {int(skew)} s away from now "
                f"(tolerance {tolerance_seconds} s): a replayed or delayed request",
                msg_id,
                sent_at,
            )
    return Verdict(True, "the signature is valid", msg_id, sent_at)
