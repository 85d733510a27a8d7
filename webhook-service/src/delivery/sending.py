"""Sending one endpoint's part of a batch: build each signed request, send it, decide.

Deliveries of one endpoint go out in order; sending stops early (the rest is released, due
at once, not counted as an attempt) when a request timed out, when the endpoint answered
410 or asked for a pause (``Retry-After`` on a 429 or 503), when the breaker's threshold is
reached, or when the lease would run out before another request could finish.  A keyed
delivery that was not delivered holds the rest of its key in the batch back the same way
(:mod:`webhooks_core.deliveries.ordering`): they wait for it.
What each result means is :func:`webhooks_core.deliveries.outcomes.decide`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from delivery.batch import BatchEndpoint, Change, DeliveryRuntime, Leased
from delivery.batch_take import FIELD_VALUE
from delivery.credentials import RunCredentials, send_with_credentials
from delivery.sender import USER_AGENT, OutboundRequest, Sender, SendResult
from webhooks_core.deliveries.ordering import holds_key
from webhooks_core.deliveries.outcomes import breaker_tripped, decide
from webhooks_core.deliveries.states import DeliveryState, released_state
from webhooks_core.endpoints.flow import holds_endpoint, is_throttled
from webhooks_core.endpoints.flow_limits import flow_control_on
from webhooks_core.messages.envelope import utcnow, webhook_body
from webhooks_core.signing import signature_header

logger = logging.getLogger("delivery.attempt")


class _Unbuildable(Exception):
    """The delivery's request cannot be built from what is stored: no request goes out."""


def _request(endpoint: BatchEndpoint, item: Leased) -> OutboundRequest:
    """The signed request of one delivery; raises :class:`_Unbuildable` if none can be made."""
    problem = endpoint.problem or item.problem
    if problem is not None:
        raise _Unbuildable(problem)
    if not FIELD_VALUE.fullmatch(item.event_id):
        raise _Unbuildable("the message's id cannot be sent as the webhook-id header")
    assert item.occurred_at is not None  # else item.problem says why
    try:
        body = webhook_body(item.event_type, item.occurred_at, item.payload)
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise _Unbuildable(f"the message cannot be serialised ({exc})") from None
    # The real time, not the scheduling clock: receivers check it against their own.
    timestamp = int(time.time())
    headers = dict(endpoint.headers)
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": item.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                endpoint.keys, item.event_id, timestamp, body, endpoint.ed25519_keys
            ),
        }
    )
    return OutboundRequest(endpoint.url, headers, body)


@dataclass
class EndpointRun:
    """The attempts of one endpoint's deliveries within a batch, in order."""

    endpoint: BatchEndpoint
    results: list[tuple[datetime, SendResult]] = field(default_factory=list)
    gone: bool = False
    trailing_failures: int = 0  # of this batch's attempts, the failed ones at its end
    credentials: RunCredentials | None = None  # an endpoint with OAuth or TLS settings
    claimed_at: datetime | None = None


@dataclass
class RunOutput:
    """What sending one endpoint's part of a batch produced."""

    run: EndpointRun
    changes: list[Change] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    released: int = 0
    unbuildable: int = 0  # attempts that sent no request (counted as outcome "error")


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def sender_pool() -> ThreadPoolExecutor:
    """Threads that send the endpoints of a multi-endpoint batch side by side."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="webhook-send")
        return _pool


Steps = Generator[OutboundRequest, SendResult, None]


def send_runs(
    rt: DeliveryRuntime, runs: list[tuple[BatchEndpoint, list[Leased]]], send_until: float
) -> list[RunOutput]:
    """Send several endpoints' deliveries side by side (a fan-out batch), in their order.

    A slow endpoint delays only its own.  With a sender that drives sequences on an event
    loop (:meth:`delivery.aiohttp_sender.AioHttpSender.send_sequences`), the runs without
    credentials go to it in one handoff; the others each take a sender thread.
    """
    outputs = [_output(rt, endpoint, items) for endpoint, items in runs]
    on_loop = getattr(rt.sender, "send_sequences", None)
    futures = []
    looped: list[Steps] = []
    for output, (endpoint, items) in zip(outputs, runs, strict=True):
        steps = _steps(rt, output, items, send_until)
        if on_loop is not None and endpoint.oauth is None and endpoint.tls is None:
            looped.append(steps)
        else:
            futures.append(sender_pool().submit(_drive, rt, output, steps))
    if looped:
        assert on_loop is not None
        on_loop(looped)
    for future in futures:
        future.result()
    return outputs


def send_run(
    rt: DeliveryRuntime, endpoint: BatchEndpoint, items: list[Leased], send_until: float
) -> RunOutput:
    """Send one endpoint's deliveries in order; stop early as the module doc says.

    Nothing one delivery does raises out of here: a request that cannot be built is a
    failed attempt that dead-letters its delivery at once (its stored values will not
    change by waiting), a sender that raises is a failed attempt retried by schedule.
    """
    output = _output(rt, endpoint, items)
    steps = _steps(rt, output, items, send_until)
    on_loop = getattr(rt.sender, "send_sequences", None)
    if on_loop is not None and endpoint.oauth is None and endpoint.tls is None:
        # The whole run in one handoff to the sender's event loop.
        on_loop([steps])
    else:
        _drive(rt, output, steps)
    return output


def _output(rt: DeliveryRuntime, endpoint: BatchEndpoint, items: list[Leased]) -> RunOutput:
    """An endpoint run's empty output, with the time its deliveries were claimed."""
    output = RunOutput(EndpointRun(endpoint))
    if items:  # when the claim leased them (flow control's window, endpoints.flow)
        lease = timedelta(seconds=rt.settings.lease_seconds)
        output.run.claimed_at = min(item.lease_expires_at for item in items) - lease
    return output


def _drive(rt: DeliveryRuntime, output: RunOutput, steps: Steps) -> None:
    """Send each request ``steps`` yields from this thread, and give it the result."""
    run = output.run
    try:
        request = next(steps)
        while True:
            if run.endpoint.oauth is None and run.endpoint.tls is None:
                result = _send(rt.sender, request)
            else:
                result = _send_with_credentials(rt, run, request)
            request = steps.send(result)
    except StopIteration:
        return


def _steps(rt: DeliveryRuntime, output: RunOutput, items: list[Leased], send_until: float) -> Steps:
    """The run's requests, one at a time; each result sent back is recorded and decided.

    A keyed delivery that was not delivered holds the rest of its key back (released,
    parked behind it).
    """
    stopped = False
    held: set[str] = set()  # keys whose delivery in this batch was not delivered
    for item in items:
        if stopped or item.ordering_key in held or time.monotonic() > send_until:
            state = released_state(item.attempt_count)
            # Behind its key's head: parked until the head ends (webhooks_core.deliveries.ordering).
            due = None if item.ordering_key in held else rt.clock.now()
            output.changes.append(Change(item.id, state, item.attempt_count, due))
            output.released += 1
            continue
        attempted_at = rt.clock.now()
        try:
            request = _request(output.run.endpoint, item)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this delivery's
            _unbuildable(output, output.run.endpoint, item, attempted_at, exc)
        else:
            result = yield request
            stopped = _recorded(rt, output, item, attempted_at, result)
        if item.ordering_key is not None and holds_key(
            output.changes[-1].state, DeliveryState.DELIVERED
        ):
            held.add(item.ordering_key)


def _recorded(
    rt: DeliveryRuntime, output: RunOutput, item: Leased, attempted_at: datetime, result: SendResult
) -> bool:
    """Record one attempt and decide its delivery's state; True when the run must stop."""
    run, endpoint, settings = output.run, output.run.endpoint, rt.settings
    run.results.append((attempted_at, result))
    if not (
        flow_control_on(endpoint.adaptive_flow, settings.flow_control) and is_throttled(result)
    ):
        run.trailing_failures = 0 if result.succeeded else run.trailing_failures + 1
    output.attempts.append(
        {
            "delivery_id": item.id,
            "endpoint_id": endpoint.id,
            "started_at": attempted_at,
            "latency_ms": result.latency_ms,
            "status_code": result.status_code,
            "outcome": result.outcome,
            "error": result.error,
            "response_body": result.body_excerpt,
            "trigger": item.next_trigger or "scheduled",
            "event_type": item.event_type,  # for the statistics, not stored with the attempt
        }
    )
    count = item.attempt_count + 1
    decision = decide(
        result,
        count,
        endpoint.retry_schedule or settings.retry_schedule,
        settings,
        # Timed on the scheduling clock; an HTTP date in Retry-After is the receiver's real
        # time, not ours.
        now=rt.clock.now,
        real_now=utcnow,
    )
    change = Change(
        item.id,
        decision.state,
        count,
        decision.next_attempt_at,
        attempted_at=attempted_at,
        status_code=result.status_code,
        error=decision.error,
    )
    if decision.state is DeliveryState.DELIVERED and item.accepted_at is not None:
        output.lags.append((attempted_at - item.accepted_at).total_seconds())
    run.gone = run.gone or decision.gone
    output.changes.append(change)
    _log_attempt(item, endpoint, result, change, settings.log_successful_attempts)
    # A Retry-After on a 429 or 503 holds the whole endpoint (webhooks_core.endpoints.flow).
    return (
        decision.stop
        or holds_endpoint(result)
        or breaker_tripped(
            run.trailing_failures,
            len(run.results),
            endpoint.consecutive_failures,
            settings.circuit_breaker_threshold,
        )
    )


def _send_with_credentials(
    rt: DeliveryRuntime, run: EndpointRun, request: OutboundRequest
) -> SendResult:
    """The request with the endpoint's TLS context and OAuth token (delivery.credentials)."""
    if run.credentials is None:
        run.credentials = RunCredentials()
    sender = rt.sender
    return send_with_credentials(
        sender, lambda outbound: _send(sender, outbound), run.endpoint, run.credentials, request
    )


def _send(sender: Sender, request: OutboundRequest) -> SendResult:
    """``sender.send``, with anything it raises made a failed attempt (retried)."""
    started = time.perf_counter()
    try:
        return sender.send(request)
    except Exception as exc:
        logger.exception("the sender raised for %s", request.url)
        return SendResult(
            "error",
            (time.perf_counter() - started) * 1000,
            error=f"the sender failed: {type(exc).__name__}: {exc}",
        )


def _unbuildable(
    output: RunOutput,
    endpoint: BatchEndpoint,
    item: Leased,
    attempted_at: datetime,
    exc: Exception,
) -> None:
    """Record a delivery whose request could not be built: an attempt, then dead at once.

    Not counted in the endpoint's health (the receiver was never asked), and not retried:
    the stored message or endpoint that made it fail will be the same on every try.  Fix
    the endpoint (or nothing, for a message) and redrive the dead letter.
    """
    reason = str(exc) if isinstance(exc, _Unbuildable) else f"{type(exc).__name__}: {exc}"
    error = f"could not build the request: {reason}"
    output.attempts.append(
        {
            "delivery_id": item.id,
            "endpoint_id": endpoint.id,
            "started_at": attempted_at,
            "latency_ms": 0.0,
            "status_code": None,
            "outcome": "error",
            "error": error,
            "response_body": None,
            "trigger": item.next_trigger or "scheduled",
            "event_type": item.event_type,  # for the statistics, not stored with the attempt
        }
    )
    change = Change(
        item.id, DeliveryState.DEAD, item.attempt_count + 1, attempted_at=attempted_at, error=error
    )
    output.changes.append(change)
    output.unbuildable += 1
    _log_attempt(item, endpoint, SendResult("error", 0.0, error=error), change)


class SuccessSampler:
    """Which successful attempts get a log line: every ``round(1 / share)``-th one.

    A counter, not a random draw: evenly spread and free of a lock (a lost increment under
    threads only shifts which line is written).
    """

    def __init__(self, share: float) -> None:
        self.every = round(1 / share) if share > 0 else 0
        self._seen = 0

    def take(self) -> bool:
        """Whether this success is logged."""
        if not self.every:
            return False
        self._seen += 1
        return self._seen % self.every == 0


_samplers: dict[float, SuccessSampler] = {}


def _log_attempt(
    item: Leased,
    endpoint: BatchEndpoint,
    result: SendResult,
    change: Change,
    log_share: float = 1.0,
) -> None:
    # One structured line per attempt: JSON fields in containers, key=value on a terminal.
    # ERROR when its delivery is now dead, WARNING when it failed; successes at INFO, only
    # ``log_share`` of them (WEBHOOKS_LOG_SUCCESSFUL_ATTEMPTS; each has its attempts row).
    if change.state == DeliveryState.DEAD:
        level = logging.ERROR
    elif result.succeeded:
        level = logging.INFO
        sampler = _samplers.get(log_share)
        if sampler is None:
            sampler = _samplers.setdefault(log_share, SuccessSampler(log_share))
        if not logger.isEnabledFor(level) or not sampler.take():
            return
    else:
        level = logging.WARNING
    logger.log(
        level,
        "delivery attempt %s",
        result.outcome,
        extra={
            "delivery_id": item.id,
            "endpoint_id": str(endpoint.id),
            "event_id": item.event_id,
            "attempt": change.attempt_count,
            "outcome": result.outcome,
            "status_code": result.status_code,
            "latency_ms": round(result.latency_ms, 1),
            "state": change.state,
            "next_attempt_at": (
                change.next_attempt_at.isoformat() if change.next_attempt_at else None
            ),
            "error": result.error,
        },
    )
