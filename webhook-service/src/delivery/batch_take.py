"""Taking a leased batch: its advisory lock, and its deliveries with their endpoints in one query.

A row whose stored values cannot make a request is taken all the same, with its ``problem``
(see :func:`take`): nothing here may fail to decode, or one row would fail the whole batch.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session, sessionmaker

from delivery.batch import BatchEndpoint, DeliveryRuntime, Leased
from delivery.oauth import OAuthCredentials
from delivery.sender import url_problem
from delivery.tls import TLSCredentials
from webhooks_core.deliveries.states import SENDING_SQL
from webhooks_core.endpoints import credentials
from webhooks_core.endpoints.flow import FlowState
from webhooks_core.endpoints.flow_limits import FLOW_ON_SQL
from webhooks_core.endpoints.sealing import SealingError, unseal
from webhooks_core.signing import secret_key, signing_key

_UNLOCK = text("SELECT pg_advisory_unlock(:key)")
# One round trip: try the batch's lock (the CTE runs first and once); when it is held, the
# deliveries still leased under the token, each with its message, and on each endpoint's
# first row that endpoint with its current secrets (not repeated: fewer values to decode).
# One row with ``held`` and NULLs when nothing is left or the lock is taken.
# Nothing here may fail to decode, or one row would fail the whole batch: a message's
# timestamps come only when Python's datetime can hold them in any session time zone (else
# NULL, with the stored text), JSON comes as text and is decoded row by row.
_TAKE = text(
    # Only state constants are interpolated (deliveries.states), never input.
    f"""
    WITH batch_lock AS MATERIALIZED (SELECT pg_try_advisory_lock(:key) AS held),
    leased AS (
        SELECT d.id, d.endpoint_id, d.attempt_count, d.next_trigger, d.lease_expires_at,
               d.ordering_key, m.event_id, m.event_type,
               CASE WHEN m.occurred_at BETWEEN :earliest AND :latest THEN m.occurred_at
               END AS occurred_at,
               CASE WHEN m.occurred_at BETWEEN :earliest AND :latest THEN NULL
                    ELSE CAST(m.occurred_at AS text) END AS unreadable_occurred_at,
               CAST(m.payload AS text) AS payload,
               CASE WHEN m.created_at BETWEEN :earliest AND :latest THEN m.created_at
               END AS created_at
        FROM batch_lock, deliveries AS d JOIN messages AS m ON m.id = d.message_id
        WHERE batch_lock.held AND d.id = ANY(CAST(:ids AS bigint[]))
          AND d.lease_token = :token AND d.state = {SENDING_SQL}
    ),
    batch_endpoints AS (
        SELECT e.id, e.application_id, e.url, CAST(e.headers AS text) AS headers,
               e.enabled AND e.deleted_at IS NULL AS active, e.retry_schedule,
               e.consecutive_failures, e.failing_since, e.circuit_open_until,
               e.last_success_at, e.sealed_headers, e.auth,
               e.oauth_token_url, e.oauth_client_id, e.oauth_client_secret, e.oauth_scopes,
               e.oauth_audience, e.oauth_auth_method, e.tls_client_certificate,
               e.tls_client_key, e.tls_ca_bundle, e.tls_certificate_expires_at,
               e.max_in_flight, e.rate_limit, e.adaptive_flow,
               coalesce(array_agg(s.scheme || ':' || s.secret ORDER BY s.created_at DESC)
                        FILTER (WHERE s.id IS NOT NULL), '{{}}') AS secrets
        FROM endpoints e
        LEFT JOIN endpoint_secrets s ON s.endpoint_id = e.id
             AND (s.expires_at IS NULL OR s.expires_at > now())
             AND s.scheme = ANY(e.signature_schemes)
        WHERE e.id IN (SELECT endpoint_id FROM leased)
        GROUP BY e.id
    )
    SELECT b.held, l.id, l.endpoint_id, l.attempt_count, l.next_trigger, l.lease_expires_at,
           l.ordering_key, l.event_id, l.event_type, l.occurred_at, l.unreadable_occurred_at,
           l.payload, l.created_at,
           e.id AS e_id, e.application_id AS e_application_id, e.url AS e_url,
           e.headers AS e_headers, e.active AS e_active, e.retry_schedule AS e_retry_schedule,
           e.consecutive_failures AS e_consecutive_failures,
           e.failing_since AS e_failing_since, e.circuit_open_until AS e_circuit_open_until,
           e.last_success_at AS e_last_success_at, e.secrets AS e_secrets,
           e.sealed_headers AS e_sealed_headers, e.auth AS e_auth,
           e.oauth_token_url AS e_oauth_token_url, e.oauth_client_id AS e_oauth_client_id,
           e.oauth_client_secret AS e_oauth_client_secret, e.oauth_scopes AS e_oauth_scopes,
           e.oauth_audience AS e_oauth_audience, e.oauth_auth_method AS e_oauth_auth_method,
           e.tls_client_certificate AS e_tls_client_certificate,
           e.tls_client_key AS e_tls_client_key, e.tls_ca_bundle AS e_tls_ca_bundle,
           e.tls_certificate_expires_at AS e_tls_certificate_expires_at,
           e.max_in_flight AS e_max_in_flight, e.rate_limit AS e_rate_limit,
           e.adaptive_flow AS e_adaptive_flow,
           f.max_in_flight AS f_max_in_flight, f.rate_limit AS f_rate_limit,
           f.rate_step AS f_rate_step, f.throttled_until AS f_throttled_until,
           f.reason AS f_reason, f.latency_ms AS f_latency_ms,
           f.decreased_at AS f_decreased_at, f.changed_at AS f_changed_at,
           rb.tokens AS e_bucket_tokens
    FROM batch_lock b
         LEFT JOIN (SELECT leased.*, row_number() OVER (PARTITION BY endpoint_id ORDER BY id)
                    AS nth FROM leased) l ON true
         LEFT JOIN batch_endpoints e ON e.id = l.endpoint_id AND l.nth = 1
         LEFT JOIN endpoint_flow f ON f.endpoint_id = e.id AND {FLOW_ON_SQL}
         LEFT JOIN endpoint_rate_buckets rb ON rb.endpoint_id = e.id
    ORDER BY l.id
    """  # noqa: S608
).bindparams(bindparam("token", type_=UUID(as_uuid=True)))
# The timestamps a datetime holds whatever the session's time zone (a day inside its range).
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


@dataclass
class BatchLock:
    """The session-level advisory lock on a lease token (it outlives transactions).

    Tried by the batch's first statement (``_TAKE``, no round trip of its own); released
    after the last transaction commits.
    """

    key: int
    held: bool = False

    def release(self, session: Session) -> None:
        if self.held:
            session.execute(_UNLOCK, {"key": self.key})
            self.held = False


@contextmanager
def batch_connection(
    rt: DeliveryRuntime, token: uuid.UUID
) -> Iterator[tuple[sessionmaker[Session], BatchLock]]:
    """Sessions on one connection for the whole batch, and the batch's lock on it."""
    lock = BatchLock(int.from_bytes(token.bytes[:8], "big", signed=True))
    with rt.engine.connect() as conn:
        try:
            yield sessionmaker(bind=conn, expire_on_commit=False), lock
        finally:
            if lock.held:  # unlock before the pool gets the connection back
                try:
                    conn.rollback()
                    _unlock(conn, lock.key)
                except Exception:
                    # A connection that cannot unlock must not go back to the pool holding it.
                    conn.invalidate()
                    raise


def _unlock(conn: Connection, key: int) -> None:
    """Release the batch's lock in one round trip (autocommit: no BEGIN, no COMMIT)."""
    driver = conn.connection.dbapi_connection
    assert driver is not None
    driver.autocommit = True
    try:
        cursor = driver.cursor()
        try:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            cursor.close()
    finally:
        driver.autocommit = False


def take(
    session: Session, lock: BatchLock, token: uuid.UUID, ids: list[int]
) -> tuple[list[Leased], dict[uuid.UUID, BatchEndpoint]]:
    """Try the batch's lock; when held, its leased deliveries and their endpoints.

    A row whose stored values cannot make a request (see :func:`_message_problem` and
    :func:`_endpoint_problem`) is taken all the same, with its ``problem``: it is recorded
    like any other delivery, never left ``sending``.
    """
    rows = session.execute(
        _TAKE,
        {"key": lock.key, "ids": ids, "token": token, "earliest": _EARLIEST, "latest": _LATEST},
    ).all()
    lock.held = bool(rows[0].held)
    leased: list[Leased] = []
    endpoints: dict[uuid.UUID, BatchEndpoint] = {}
    for row in rows:
        if row.id is None:
            continue
        item = Leased(
            row.id,
            row.endpoint_id,
            row.attempt_count,
            row.next_trigger,
            row.lease_expires_at,
            row.event_id,
            row.event_type,
            row.occurred_at,
            None,
            row.created_at,
            ordering_key=row.ordering_key,
        )
        item.payload, item.problem = _message_problem(row.payload, row.unreadable_occurred_at)
        leased.append(item)
        if row.e_id is not None and row.e_id not in endpoints:
            headers, problem = _endpoint_problem(
                row.e_url, row.e_headers, row.e_sealed_headers, row.e_auth
            )
            keys, ed25519_keys, key_problem = _signing_keys(row.e_secrets)
            endpoints[row.e_id] = BatchEndpoint(
                id=row.e_id,
                application_id=row.e_application_id,
                url=row.e_url,
                headers=headers,
                active=row.e_active,
                retry_schedule=row.e_retry_schedule,
                consecutive_failures=row.e_consecutive_failures,
                failing_since=row.e_failing_since,
                circuit_open_until=row.e_circuit_open_until,
                last_success_at=row.e_last_success_at,
                keys=keys,
                ed25519_keys=ed25519_keys,
                problem=problem or key_problem,
                oauth=_oauth(row),
                tls=_tls(row),
                max_in_flight=row.e_max_in_flight,
                rate_limit=row.e_rate_limit,
                adaptive_flow=row.e_adaptive_flow,
                flow=_flow(row),
                bucket_tokens=row.e_bucket_tokens,
            )
    return leased, endpoints


def _flow(row: Any) -> FlowState:
    """What the engine learned of the endpoint's limits (webhooks_core.endpoints.flow)."""
    return FlowState(
        row.f_max_in_flight,
        row.f_rate_limit,
        row.f_rate_step,
        row.f_throttled_until,
        row.f_reason,
        row.f_latency_ms,
        row.f_decreased_at,
        row.f_changed_at,
    )


def _oauth(row: Any) -> OAuthCredentials | None:
    """The endpoint's OAuth client credentials, when it has them (all columns are set)."""
    if row.e_oauth_token_url is None or row.e_oauth_client_secret is None:
        return None
    return OAuthCredentials(
        token_url=row.e_oauth_token_url,
        client_id=row.e_oauth_client_id or "",
        sealed_client_secret=row.e_oauth_client_secret,
        scopes=tuple(row.e_oauth_scopes or ()),
        audience=row.e_oauth_audience,
        auth_method=row.e_oauth_auth_method or "client_secret_basic",
    )


def _tls(row: Any) -> TLSCredentials | None:
    """The endpoint's client certificate and CA bundle, when it has either."""
    if row.e_tls_ca_bundle is None and row.e_tls_client_certificate is None:
        return None
    return TLSCredentials(
        client_certificate=row.e_tls_client_certificate,
        sealed_client_key=row.e_tls_client_key,
        ca_bundle=row.e_tls_ca_bundle,
        certificate_expires_at=row.e_tls_certificate_expires_at,
    )


def _message_problem(payload: str, unreadable_occurred_at: str | None) -> tuple[Any, str | None]:
    """The message's decoded payload, and why no request can be made of it (or None)."""
    if unreadable_occurred_at is not None:
        return None, f"the message's timestamp {unreadable_occurred_at!r} is out of range"
    try:
        return json.loads(payload), None
    except (ValueError, RecursionError) as exc:
        # A number of more than 4,300 digits, or nesting deeper than Python's recursion.
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return None, f"the message's payload cannot be decoded ({reason})"


# RFC 9110 field names (tokens), and values http.client sends as they are (Latin-1, no
# control characters but tab): anything else would fail in the sender, or be reinterpreted.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _endpoint_problem(
    url: str, headers_json: str | None, sealed_headers: str | None, auth: str | None
) -> tuple[dict[str, str], str | None]:
    """The endpoint's request headers, and why no request can be built (or None).

    Sealed values are unsealed here, once per endpoint per batch (and decrypted once per
    process: :func:`webhooks_core.endpoints.sealing.unseal` caches by stored value).
    """
    problem = url_problem(url)
    if problem is not None:
        return {}, f"the endpoint's URL cannot be used ({problem})"
    try:
        headers = json.loads(headers_json) if headers_json is not None else {}
    except (ValueError, RecursionError):
        headers = None
    if not isinstance(headers, dict) or not all(
        isinstance(value, str) for value in headers.values()
    ):
        shown = "null" if headers is None else type(headers).__name__
        return {}, f"the endpoint's custom headers are not an object of strings ({shown})"
    try:
        headers = credentials.request_headers(headers, sealed_headers, auth)
    except (ValueError, KeyError, TypeError) as exc:
        return {}, f"the endpoint's credentials cannot be unsealed ({exc})"
    for name, value in headers.items():
        if not _FIELD_NAME.fullmatch(name):
            return {}, f"the endpoint's custom header name {name!r} is not an HTTP token"
        if not FIELD_VALUE.fullmatch(value):
            return (
                {},
                f"the endpoint's custom header {name!r} holds control characters or characters"
                " beyond Latin-1",
            )
    return headers, None


@lru_cache(maxsize=4096)
def _ed25519_key(sealed: str) -> Ed25519PrivateKey:
    """The Ed25519 key of a sealed ``whsk_`` key, parsed once per process (a parse costs
    about as much as a signature; the sealed value stands for one key)."""
    return signing_key(unseal(sealed))


def _signing_keys(
    secrets: list[str],
) -> tuple[list[bytes], list[Ed25519PrivateKey], str | None]:
    """The endpoint's ``v1`` and ``v1a`` keys (``scheme:sealed`` each), or why not."""
    keys: list[bytes] = []
    ed25519_keys: list[Ed25519PrivateKey] = []
    for entry in secrets:
        scheme, _, sealed = entry.partition(":")
        try:
            if scheme == "v1a":
                ed25519_keys.append(_ed25519_key(sealed))
            else:
                keys.append(secret_key(unseal(sealed)))
        except SealingError as exc:  # before ValueError, its base class
            return [], [], f"a signing secret of the endpoint cannot be unsealed ({exc})"
        except ValueError:
            return [], [], "a signing secret of the endpoint cannot be decoded"
    return keys, ed25519_keys, None
