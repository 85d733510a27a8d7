"""A delivery's states, the transitions allowed between them, and SQL built from both.

The one home of the state machine (docs/delivery.md draws it)::

    pending --claim--> sending --2xx--> delivered
       ^                  |---failed, schedule left--> retrying --claim--> sending
       |                  |---failed, schedule spent--> dead
       |                  |---410 / endpoint disabled--> cancelled
       |<--released-------|   (lease ended or batch stopped before its request)
       |<--------------- replay (resend, recover, redrive) of retrying/delivered/dead/cancelled

Any open state goes to ``cancelled`` when its endpoint is disabled or deleted, and a delivery
whose leases keep expiring goes from ``sending`` to ``dead``.

The SQL fragments are quoted literals of the enum's fixed values, never of input, so they may
be interpolated into statement text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class DeliveryState(enum.StrEnum):
    """Where a delivery is.  The last three are terminal."""

    PENDING = "pending"  # due at next_attempt_at, never attempted or replayed
    SENDING = "sending"  # leased by a worker until lease_expires_at
    RETRYING = "retrying"  # failed, due again at next_attempt_at
    DELIVERED = "delivered"
    DEAD = "dead"  # retries exhausted; see dead_letters
    CANCELLED = "cancelled"  # endpoint deleted, disabled or gone (410)


TERMINAL_STATES = frozenset({DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.CANCELLED})
# Waiting for their next attempt at next_attempt_at (the scheduler's claim reads these).
DUE_STATES = (DeliveryState.PENDING.value, DeliveryState.RETRYING.value)
# Not yet in a terminal state: cancelled when the endpoint goes.
OPEN_STATES = (
    DeliveryState.PENDING.value,
    DeliveryState.SENDING.value,
    DeliveryState.RETRYING.value,
)
# What a replay may requeue: everything not already waiting for its next attempt now.
REPLAYABLE_STATES = (
    DeliveryState.DELIVERED,
    DeliveryState.DEAD,
    DeliveryState.CANCELLED,
    DeliveryState.RETRYING,
)
# What "recover" picks up: deliveries that failed (dead, or failing and waiting to retry).
FAILED_STATES = (DeliveryState.DEAD, DeliveryState.RETRYING)
# What "recover" with ``include_cancelled`` picks up: the failed ones and the cancelled ones
# (their endpoint was disabled or answered 410), once the endpoint is enabled again.
RECOVERABLE_STATES = (*FAILED_STATES, DeliveryState.CANCELLED)

_S = DeliveryState
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    _S.PENDING: frozenset({_S.SENDING, _S.CANCELLED}),
    _S.SENDING: frozenset(
        {_S.DELIVERED, _S.RETRYING, _S.DEAD, _S.CANCELLED, _S.PENDING}  # released
    ),
    _S.RETRYING: frozenset({_S.SENDING, _S.CANCELLED, _S.PENDING}),  # pending: replayed
    _S.DELIVERED: frozenset({_S.PENDING}),  # resent
    _S.DEAD: frozenset({_S.PENDING}),  # redriven
    _S.CANCELLED: frozenset({_S.PENDING}),  # resent once the endpoint is back
}


class IllegalTransition(ValueError):
    """A change of state the state machine does not allow."""


def can_transition(current: DeliveryState | str, new: DeliveryState | str) -> bool:
    """True when a delivery in ``current`` may go to ``new`` (staying put is always allowed)."""
    current, new = DeliveryState(current), DeliveryState(new)
    return current == new or new in TRANSITIONS[current]


def check_transition(current: DeliveryState | str, new: DeliveryState | str) -> DeliveryState:
    """``new`` as a state; raises :class:`IllegalTransition` when ``current`` may not go there."""
    if not can_transition(current, new):
        raise IllegalTransition(f"a delivery cannot go from {current} to {new}")
    return DeliveryState(new)


def released_state(attempt_count: int) -> DeliveryState:
    """The state of a delivery handed back unattempted: ``pending`` until it was tried once."""
    return DeliveryState.PENDING if attempt_count == 0 else DeliveryState.RETRYING


def sql_literal(state: DeliveryState) -> str:
    """``state`` as a quoted SQL string literal (a fixed constant: safe to interpolate)."""
    return f"'{DeliveryState(state).value}'"


def sql_list(states: Iterable[DeliveryState | str]) -> str:
    """``('a', 'b')``: the states as a parenthesised SQL list, for ``state IN ...``."""
    return "(" + ", ".join(sql_literal(DeliveryState(s)) for s in states) + ")"


# Fragments for statement text (``f"... WHERE state IN {OPEN_SQL}"``).
PENDING_SQL = sql_literal(DeliveryState.PENDING)
SENDING_SQL = sql_literal(DeliveryState.SENDING)
RETRYING_SQL = sql_literal(DeliveryState.RETRYING)
DELIVERED_SQL = sql_literal(DeliveryState.DELIVERED)
DEAD_SQL = sql_literal(DeliveryState.DEAD)
CANCELLED_SQL = sql_literal(DeliveryState.CANCELLED)
DUE_SQL = sql_list(DUE_STATES)
OPEN_SQL = sql_list(OPEN_STATES)
ALL_SQL = sql_list(DeliveryState)
# The state of a delivery released unattempted, as a SQL expression over its row.
RELEASED_STATE_SQL = f"CASE WHEN attempt_count = 0 THEN {PENDING_SQL} ELSE {RETRYING_SQL} END"
# Due with a time to be due at: what ix_deliveries_due_application holds (a parked delivery,
# due by its state but with no time, waits behind its key's head: deliveries.ordering).
DUE_WITH_A_TIME_SQL = f"state IN {DUE_SQL} AND next_attempt_at IS NOT NULL"


def first_due_by_application(name: str) -> str:
    """The body of a ``WITH RECURSIVE name AS (...)`` query: one ``(application_id,
    next_attempt_at)`` row per application with due deliveries, its earliest time.

    A loose scan of ix_deliveries_due_application: one index descent per application,
    however many deliveries it has due (the claim's fair reading, the overdue gauge).
    """
    return f"""
        (SELECT d.application_id, d.next_attempt_at FROM deliveries d
         WHERE d.state IN {DUE_SQL} AND d.next_attempt_at IS NOT NULL
         ORDER BY d.application_id, d.next_attempt_at LIMIT 1)
        UNION ALL
        SELECT n.application_id, n.next_attempt_at
        FROM {name} w CROSS JOIN LATERAL (
            SELECT d.application_id, d.next_attempt_at FROM deliveries d
            WHERE d.state IN {DUE_SQL} AND d.next_attempt_at IS NOT NULL
              AND d.application_id > w.application_id
            ORDER BY d.application_id, d.next_attempt_at LIMIT 1) n"""  # noqa: S608
