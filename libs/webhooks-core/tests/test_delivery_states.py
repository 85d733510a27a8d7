"""The delivery state machine: its transitions and the SQL fragments built from it (no database)."""

from __future__ import annotations

import pytest

from webhooks_core.deliveries.states import (
    ALL_SQL,
    DUE_SQL,
    DUE_STATES,
    FAILED_STATES,
    OPEN_SQL,
    OPEN_STATES,
    RELEASED_STATE_SQL,
    REPLAYABLE_STATES,
    TERMINAL_STATES,
    DeliveryState,
    IllegalTransition,
    can_transition,
    check_transition,
    released_state,
    sql_list,
)
from webhooks_core.models import DeliveryState as ModelsDeliveryState

S = DeliveryState


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.PENDING, S.SENDING),
        (S.RETRYING, S.SENDING),
        (S.SENDING, S.DELIVERED),
        (S.SENDING, S.RETRYING),
        (S.SENDING, S.DEAD),
        (S.SENDING, S.CANCELLED),
        (S.SENDING, S.PENDING),  # released before its first attempt
        (S.PENDING, S.CANCELLED),
        (S.RETRYING, S.CANCELLED),
        (S.DEAD, S.PENDING),  # redrive
        (S.DELIVERED, S.PENDING),  # resend
        (S.CANCELLED, S.PENDING),  # resend
        (S.RETRYING, S.PENDING),  # recover
    ],
)
def test_the_transitions_the_platform_makes_are_allowed(current: S, new: S) -> None:
    assert can_transition(current, new)
    assert check_transition(str(current), str(new)) is new


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.PENDING, S.DELIVERED),  # never without a lease
        (S.PENDING, S.DEAD),
        (S.RETRYING, S.DELIVERED),
        (S.DELIVERED, S.SENDING),  # a terminal state leaves only by a replay
        (S.DEAD, S.RETRYING),
        (S.CANCELLED, S.SENDING),
        (S.DELIVERED, S.DEAD),
    ],
)
def test_other_transitions_are_refused(current: S, new: S) -> None:
    assert not can_transition(current, new)
    with pytest.raises(IllegalTransition, match=f"from {current} to {new}"):
        check_transition(current, new)


def test_terminal_states_leave_only_for_pending() -> None:
    for state in TERMINAL_STATES:
        assert [s for s in S if s != state and can_transition(state, s)] == [S.PENDING]


def test_a_released_delivery_is_pending_until_its_first_attempt() -> None:
    assert released_state(0) is S.PENDING
    assert released_state(3) is S.RETRYING
    assert RELEASED_STATE_SQL == "CASE WHEN attempt_count = 0 THEN 'pending' ELSE 'retrying' END"


def test_sql_fragments_are_built_from_the_enum() -> None:
    assert DUE_SQL == "('pending', 'retrying')"
    assert OPEN_SQL == "('pending', 'sending', 'retrying')"
    assert ALL_SQL == "('pending', 'sending', 'retrying', 'delivered', 'dead', 'cancelled')"
    assert set(OPEN_STATES) == {str(s) for s in S} - {str(s) for s in TERMINAL_STATES}
    with pytest.raises(ValueError, match="is not a valid DeliveryState"):
        sql_list(["pending'; DROP TABLE deliveries; --"])


def test_the_models_reexport_the_same_enum() -> None:
    assert ModelsDeliveryState is DeliveryState


def test_the_named_state_sets_agree_with_the_transitions() -> None:
    # A replay (resend, recover, redrive) makes a delivery pending again.
    assert all(can_transition(state, S.PENDING) for state in REPLAYABLE_STATES)
    assert set(FAILED_STATES) <= set(REPLAYABLE_STATES)
    # A claim leases only due deliveries; whatever a batch records comes from sending.
    assert {s for s in S if can_transition(s, S.SENDING) and s != S.SENDING} == set(DUE_STATES)
    for attempts in (0, 1):
        assert can_transition(S.SENDING, released_state(attempts))
    # Open states are exactly those a disable may cancel.
    assert all(can_transition(state, S.CANCELLED) for state in OPEN_STATES)
