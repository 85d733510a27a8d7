"""Planning a claim cycle: due rows -> batches, without a database."""

from __future__ import annotations

import uuid

from webhooks_core.deliveries.planning import (
    MIX_MAX_ROWS,
    SPREAD_BELOW_ENDPOINTS,
    Batch,
    Capacity,
    DueRow,
    RateLimiter,
    endpoint_slots,
    plan_batches,
    read_capacity,
)

APP = uuid.UUID(int=1)
OTHER_APP = uuid.UUID(int=2)


class Unlimited:
    """An allowance that never limits (the endpoints in most tests have no rate limit)."""

    def allowance(self, endpoint_id: uuid.UUID, rate: int) -> int:
        raise AssertionError("asked for an endpoint without a rate limit")

    def spend(self, endpoint_id: uuid.UUID, count: int) -> None:
        raise AssertionError("spent for an endpoint without a rate limit")


class Tokens:
    """A fixed number of tokens per endpoint, recording what was spent."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.spent: list[tuple[uuid.UUID, int]] = []

    def allowance(self, endpoint_id: uuid.UUID, rate: int) -> int:
        return self.tokens

    def spend(self, endpoint_id: uuid.UUID, count: int) -> None:
        self.spent.append((endpoint_id, count))


def endpoint(n: int) -> uuid.UUID:
    return uuid.UUID(int=1000 + n)


def rows(
    endpoint_id: uuid.UUID, ids: range | list[int], *, app: uuid.UUID = APP, **kw: object
) -> list[DueRow]:
    values: dict[str, object] = {"max_in_flight": 4}
    values.update(kw)
    return [DueRow(i, endpoint_id, app, **values) for i in ids]  # type: ignore[arg-type]


def test_few_endpoints_spread_over_their_free_slots() -> None:
    result = plan_batches(rows(endpoint(1), range(1, 9)), Capacity(100), 10, Unlimited())
    assert result.batches == [
        Batch(endpoint(1), [1, 2]),
        Batch(endpoint(1), [3, 4]),
        Batch(endpoint(1), [5, 6]),
        Batch(endpoint(1), [7, 8]),
    ]
    assert not result.saturated
    assert result.left == []
    assert result.wake_in is None


def test_batch_size_and_slots_bound_a_cycle_and_the_rest_stays_due() -> None:
    due = rows(endpoint(1), range(1, 31), max_in_flight=2)
    result = plan_batches(due, Capacity(100), 10, Unlimited())
    assert result.batches == [
        Batch(endpoint(1), list(range(1, 11))),
        Batch(endpoint(1), list(range(11, 21))),
    ]
    assert result.saturated
    assert result.left == list(range(21, 31))
    assert result.capped == {endpoint(1)}


def test_batches_in_flight_take_an_endpoints_slots() -> None:
    due = rows(endpoint(1), range(1, 5), max_in_flight=3)
    capacity = Capacity(100, in_flight={endpoint(1): 2})
    result = plan_batches(due, capacity, 10, Unlimited())
    assert result.batches == [Batch(endpoint(1), [1, 2, 3, 4])]
    assert not result.saturated


def test_an_endpoint_without_free_slots_waits() -> None:
    due = rows(endpoint(1), [1, 2], max_in_flight=2) + rows(endpoint(2), [3])
    capacity = Capacity(100, in_flight={endpoint(1): 2})
    result = plan_batches(due, capacity, 10, Unlimited())
    assert result.batches == [Batch(endpoint(2), [3])]
    assert result.saturated
    assert result.left == [1, 2]


def test_a_failing_endpoint_gets_one_batch_and_none_while_one_is_out() -> None:
    due = rows(endpoint(1), range(1, 6), failing=True)
    assert plan_batches(due, Capacity(100), 10, Unlimited()).batches == [
        Batch(endpoint(1), [1, 2, 3, 4, 5])
    ]
    busy = plan_batches(due, Capacity(100, in_flight={endpoint(1): 1}), 10, Unlimited())
    assert busy.batches == []
    assert busy.saturated


def test_a_half_open_breaker_gets_one_probe_of_one_delivery() -> None:
    due = rows(endpoint(1), range(1, 6), failing=True, half_open=True)
    result = plan_batches(due, Capacity(100), 10, Unlimited())
    assert result.batches == [Batch(endpoint(1), [1])]
    assert result.left == [2, 3, 4, 5]
    assert not result.saturated


def test_endpoint_slots() -> None:
    (row,) = rows(endpoint(1), [1], max_in_flight=5)
    assert endpoint_slots(row, 0) == 5
    assert endpoint_slots(row, 3) == 2
    assert endpoint_slots(row, 7) == 0
    (failing,) = rows(endpoint(1), [1], max_in_flight=5, failing=True)
    assert endpoint_slots(failing, 0) == 1
    assert endpoint_slots(failing, 1) == 0


def test_a_delivery_whose_lease_expired_goes_alone() -> None:
    due = [
        DueRow(1, endpoint(1), APP, max_in_flight=4),
        DueRow(2, endpoint(1), APP, max_in_flight=4, lease_expiries=1),
        DueRow(3, endpoint(1), APP, max_in_flight=4),
    ]
    result = plan_batches(due, Capacity(100), 10, Unlimited())
    assert result.batches == [
        Batch(endpoint(1), [2]),
        Batch(endpoint(1), [1]),
        Batch(endpoint(1), [3]),
    ]


def test_suspects_alone_use_up_the_slots_first() -> None:
    due = [
        DueRow(1, endpoint(1), APP, max_in_flight=2, lease_expiries=2),
        DueRow(2, endpoint(1), APP, max_in_flight=2, lease_expiries=1),
        DueRow(3, endpoint(1), APP, max_in_flight=2, lease_expiries=1),
        DueRow(4, endpoint(1), APP, max_in_flight=2),
    ]
    result = plan_batches(due, Capacity(100), 10, Unlimited())
    assert result.batches == [Batch(endpoint(1), [1]), Batch(endpoint(1), [2])]
    assert result.saturated
    assert result.left == [3, 4]


def test_application_slots_bound_all_its_endpoints() -> None:
    due = rows(endpoint(1), range(1, 5)) + rows(endpoint(2), range(5, 9))
    due += rows(endpoint(3), range(9, 13))
    result = plan_batches(due, Capacity(3), 10, Unlimited())
    assert result.batches == [
        Batch(endpoint(1), [1, 2]),
        Batch(endpoint(1), [3, 4]),
        Batch(endpoint(2), [5, 6, 7, 8]),
    ]
    assert result.saturated
    assert result.left == [9, 10, 11, 12]
    # Left by the application's slots, not endpoint 3's own: no endpoint is capped.
    assert result.capped == frozenset()


def test_an_application_with_batches_in_flight_has_only_its_free_slots() -> None:
    due = rows(endpoint(1), range(1, 5)) + rows(endpoint(2), [5], app=OTHER_APP)
    capacity = Capacity(4, application_free={APP: 1})
    result = plan_batches(due, capacity, 10, Unlimited())
    assert result.batches == [Batch(endpoint(1), [1, 2, 3, 4]), Batch(endpoint(2), [5])]


def test_many_endpoints_with_few_rows_share_one_batch_per_application() -> None:
    due: list[DueRow] = []
    for n in range(SPREAD_BELOW_ENDPOINTS):
        app = APP if n % 2 == 0 else OTHER_APP
        due += rows(endpoint(n), [10 * n + 1, 10 * n + 2], app=app)
    result = plan_batches(due, Capacity(100), 100, Unlimited())
    assert result.batches == [
        Batch(None, [1, 2, 21, 22, 41, 42, 61, 62]),
        Batch(None, [11, 12, 31, 32, 51, 52, 71, 72]),
    ]
    assert result.left == []


def test_a_shared_batch_closes_at_the_batch_size() -> None:
    due: list[DueRow] = []
    for n in range(SPREAD_BELOW_ENDPOINTS):
        due += rows(endpoint(n), [10 * n + 1, 10 * n + 2])
    result = plan_batches(due, Capacity(100), 4, Unlimited())
    assert result.batches == [
        Batch(None, [1, 2, 11, 12]),
        Batch(None, [21, 22, 31, 32]),
        Batch(None, [41, 42, 51, 52]),
        Batch(None, [61, 62, 71, 72]),
    ]


def test_with_many_endpoints_busy_or_failing_ones_get_full_batches_of_their_own() -> None:
    due = rows(endpoint(0), range(100, 100 + MIX_MAX_ROWS + 3))
    due += rows(endpoint(1), [200, 201], failing=True)
    for n in range(2, SPREAD_BELOW_ENDPOINTS):
        due += rows(endpoint(n), [10 * n])
    result = plan_batches(due, Capacity(100), 5, Unlimited())
    assert result.batches == [
        Batch(endpoint(0), [100, 101, 102, 103, 104]),
        Batch(endpoint(0), [105, 106]),
        Batch(endpoint(1), [200, 201]),
        Batch(None, [20, 30, 40, 50, 60]),
        Batch(None, [70]),
    ]


def test_a_rate_limit_holds_back_the_rest_and_says_when_to_wake() -> None:
    due = rows(endpoint(1), range(1, 6), rate_limit=4)
    tokens = Tokens(2)
    result = plan_batches(due, Capacity(100), 10, tokens)
    assert [i for b in result.batches for i in b.delivery_ids] == [1, 2]
    assert tokens.spent == [(endpoint(1), 2)]
    assert result.wake_in == 0.25
    assert result.left == [3, 4, 5]
    # Left by its own rate while its application has free slots: the claim reads past it.
    assert result.capped == {endpoint(1)}
    empty = Tokens(0)
    none = plan_batches(due, Capacity(100), 10, empty)
    assert none.batches == []
    assert empty.spent == []
    assert none.wake_in == 0.25


def test_read_capacity() -> None:
    app, busy, full, free = uuid.uuid4(), endpoint(1), endpoint(2), endpoint(3)
    capacity = read_capacity(
        [
            ("endpoint", full, 2, 2),
            ("endpoint", free, 1, 3),
            ("application", app, 5, 4),
            ("open", busy, 0, 0),
        ],
        application_limit=4,
    )
    assert capacity.in_flight == {full: 2, free: 1}
    assert capacity.excluded_endpoints == {full, busy}
    assert capacity.full_applications == {app}
    assert capacity.saturated
    only_open = read_capacity([("open", busy, 0, 0)], application_limit=4)
    assert only_open.excluded_endpoints == {busy}
    assert not only_open.saturated


def test_rate_limiter_buckets_refill_at_the_rate_up_to_one_second() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert limiter.allowance(endpoint(1), 10) == 10
    limiter.spend(endpoint(1), 10)
    assert limiter.allowance(endpoint(1), 10) == 0
    now[0] += 0.35
    assert limiter.allowance(endpoint(1), 10) == 3
    now[0] += 60
    assert limiter.allowance(endpoint(1), 10) == 10
