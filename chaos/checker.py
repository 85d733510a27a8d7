"""The chaos checker: joins what the platform stored with what the receivers logged.

**Healthy applications** (:func:`check`).  Expected deliveries come from outside the platform:
every event the producer committed (its outbox) and every message the management API
accepted (the run's own client saw the 2xx), times every endpoint subscribed to the event's
type, by the run's own subscription table.  Then, per (webhook-id, endpoint):

* **delivered** / **dead**: the platform's final state of the delivery row;
* **lost**: expected, never accepted by the receiver (no 2xx answer), and not dead;
* **duplicates**: accepted receipts beyond the first;
* **phantoms**: receipts the checker did not expect (wrong id, wrong endpoint);
* **bad signatures**: receipts whose Standard Webhooks signature did not verify;
* **stranded**: expected deliveries that are not in a terminal state after the drain
  (pending, sending, retrying, or no row at all).

**The poisoned application** (:func:`check_poisoned`): its receivers and messages are hostile,
so nothing is expected of them but an end: every one of its delivery rows must be terminal
(delivered, dead or cancelled).  Counted by state, plus those marked delivered although the
receiver never completed a 2xx answer (a response cut in its headers taken for a success).

**Ordering** (:func:`check_ordering`): the people producer's events are keyed by person id
and the API application's messages by one of a few keys; per endpoint and key, the
receivers' arrivals must follow the platform's acceptance order (delivery id), where any
message may arrive again as an exact repeat of one that already arrived there.

A run passes when the healthy lost, phantoms, bad signatures and stranded are all 0, no
poisoned delivery is stranded and no key was delivered out of order (:func:`passed`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, text

from bench.receiver import Receipt

Pair = tuple[str, str]  # (webhook-id, endpoint path)
TERMINAL = frozenset({"delivered", "dead", "cancelled"})


@dataclass(frozen=True)
class ChaosReport:
    """The checker's counts."""

    events: int
    deliveries: int
    delivered: int
    dead: int
    lost: int
    duplicates: int
    phantoms: int
    bad_signatures: int
    stranded: int
    delivered_without_receipt: int
    cancelled: int = 0

    @property
    def passed(self) -> bool:
        """Nothing lost, forged, unexpected or left hanging."""
        return not (self.lost or self.phantoms or self.bad_signatures or self.stranded)

    def detail_line(self) -> str:
        """The counts the closing line leaves out, printed just before it."""
        return (
            f"chaos: phantoms={self.phantoms} bad_signatures={self.bad_signatures} "
            f"stranded={self.stranded} cancelled={self.cancelled} "
            f"delivered_without_receipt={self.delivered_without_receipt}"
        )

    def line(self) -> str:
        """The closing line of ``make chaos``."""
        return (
            f"chaos: events={self.events} deliveries={self.deliveries} "
            f"delivered={self.delivered} dead={self.dead} lost={self.lost} "
            f"duplicates={self.duplicates}"
        )

    def as_dict(self) -> dict[str, Any]:
        """For the JSON result file."""
        return {**asdict(self), "passed": self.passed}


def expected_pairs(
    events: Iterable[tuple[str, str]], subscriptions: Mapping[str, Iterable[str]]
) -> set[Pair]:
    """Every (event id, path) owed: ``events`` are (event id, type); ``subscriptions`` map an
    endpoint path to its event types (empty: every type)."""
    subs = {path: frozenset(types) for path, types in subscriptions.items()}
    return {
        (event_id, path)
        for event_id, event_type in events
        for path, types in subs.items()
        if not types or event_type in types
    }


def check(
    events: Iterable[tuple[str, str]],
    subscriptions: Mapping[str, Iterable[str]],
    states: Mapping[Pair, str],
    receipts: Iterable[Receipt],
) -> ChaosReport:
    """Count what happened; ``states`` maps (event id, path) to the delivery row's state."""
    event_list = list(events)
    expected = expected_pairs(event_list, subscriptions)
    accepted: Counter[Pair] = Counter()
    phantoms = bad = 0
    for receipt in receipts:
        pair = (receipt.webhook_id, receipt.path)
        if receipt.signature != 1:
            bad += 1
        if pair not in expected:
            phantoms += 1
            continue
        if receipt.accepted:
            accepted[pair] += 1
    delivered = dead = cancelled = lost = stranded = without_receipt = 0
    for pair in expected:
        state = states.get(pair)
        if state == "delivered":
            delivered += 1
            if not accepted[pair]:
                without_receipt += 1
        elif state == "dead":
            dead += 1
        elif state == "cancelled":  # a healthy endpoint is never disabled: lost if unreceived
            cancelled += 1
        else:
            stranded += 1
        if not accepted[pair] and state != "dead":
            lost += 1
    return ChaosReport(
        events=len(event_list),
        deliveries=len(expected),
        delivered=delivered,
        dead=dead,
        lost=lost,
        duplicates=sum(n - 1 for n in accepted.values() if n > 1),
        phantoms=phantoms,
        bad_signatures=bad,
        stranded=stranded,
        delivered_without_receipt=without_receipt,
        cancelled=cancelled,
    )


@dataclass(frozen=True)
class PoisonReport:
    """How the poisoned application's deliveries ended."""

    deliveries: int
    delivered: int
    dead: int
    cancelled: int
    stranded: int
    delivered_without_2xx: int
    by_endpoint: dict[str, dict[str, int]]

    @property
    def passed(self) -> bool:
        """Every poisoned delivery ended (whatever the end)."""
        return self.stranded == 0

    def line(self) -> str:
        """The poisoned application's line, printed before the closing line."""
        return (
            f"chaos-poisoned: deliveries={self.deliveries} delivered={self.delivered} "
            f"dead={self.dead} cancelled={self.cancelled} stranded={self.stranded} "
            f"delivered_without_2xx={self.delivered_without_2xx}"
        )

    def as_dict(self) -> dict[str, Any]:
        """For the JSON result file."""
        return {**asdict(self), "passed": self.passed}


def check_poisoned(states: Mapping[Pair, str], receipts: Iterable[Receipt]) -> PoisonReport:
    """Count the poisoned application's deliveries by state; ``states`` maps (event id, path)
    to the state of each of its delivery rows, ``receipts`` are its receivers' logs."""
    answered: set[Pair] = {(r.webhook_id, r.path) for r in receipts if r.accepted}
    by_endpoint: dict[str, Counter[str]] = {}
    counts: Counter[str] = Counter()
    without_2xx = 0
    for pair, state in states.items():
        final = state if state in TERMINAL else "stranded"
        counts[final] += 1
        by_endpoint.setdefault(pair[1], Counter())[state] += 1
        if state == "delivered" and pair not in answered:
            without_2xx += 1
    return PoisonReport(
        deliveries=len(states),
        delivered=counts["delivered"],
        dead=counts["dead"],
        cancelled=counts["cancelled"],
        stranded=counts["stranded"],
        delivered_without_2xx=without_2xx,
        by_endpoint={path: dict(sorted(c.items())) for path, c in sorted(by_endpoint.items())},
    )


def passed(
    healthy: ChaosReport, poisoned: PoisonReport | None, ordering: OrderingReport | None = None
) -> bool:
    """The run's verdict: healthy deliveries all accounted for, poisoned ones all ended, no
    key delivered out of order."""
    return (
        healthy.passed
        and (poisoned is None or poisoned.passed)
        and (ordering is None or ordering.passed)
    )


def receipts_at(receipts: Iterable[Receipt], paths: Iterable[str]) -> list[Receipt]:
    """The receipts logged at ``paths`` (one application's endpoints)."""
    wanted = set(paths)
    return [receipt for receipt in receipts if receipt.path in wanted]


def delivery_states(engine: Engine, paths: Iterable[str]) -> dict[Pair, str]:
    """(event id, endpoint path) -> state of every delivery to the endpoints at ``paths``."""
    wanted = set(paths)
    rows = {}
    with engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT m.event_id, e.url, d.state FROM deliveries d "
                "JOIN messages m ON m.id = d.message_id JOIN endpoints e ON e.id = d.endpoint_id"
            )
        )
        for event_id, url, state in result:
            path = urlsplit(url).path
            if path in wanted:
                rows[(event_id, path)] = state
    return rows


def stored_events(engine: Engine, application_id: str, event_type: str) -> list[str]:
    """Event ids the platform stored for one application and type (whatever the client
    heard: a message stored is owed its deliveries even when its answer was lost)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT event_id FROM messages "
                    "WHERE application_id = :app AND event_type = :type"
                ),
                {"app": application_id, "type": event_type},
            ).scalars()
        )


def outbox_events(producer_engine: Engine) -> list[tuple[str, str]]:
    """(event id, type) of every event the producer committed to its outbox."""
    with producer_engine.connect() as conn:
        return [
            (row[0], row[1])
            for row in conn.execute(text("SELECT event_id, event_type FROM outbox"))
        ]


@dataclass(frozen=True)
class OrderingReport:
    """Keyed deliveries as the receivers saw them: ``violations`` counts arrivals of a
    key's message, for the first time at its endpoint, after a later message of that key
    (an arrival of one already seen there is a repeat, allowed by at-least-once)."""

    keyed_deliveries: int
    keys: int
    violations: int
    examples: list[str]

    @property
    def passed(self) -> bool:
        """No key delivered out of order at any receiver."""
        return self.violations == 0

    def line(self) -> str:
        """The ordering line, printed before the closing line."""
        return (
            f"chaos-ordering: keyed_deliveries={self.keyed_deliveries} keys={self.keys} "
            f"violations={self.violations}"
        )

    def as_dict(self) -> dict[str, Any]:
        """For the JSON result file."""
        return {**asdict(self), "passed": self.passed}


def check_ordering(
    keyed: Mapping[Pair, tuple[str, int]], receipts: Iterable[Receipt]
) -> OrderingReport:
    """``keyed`` maps (event id, path) of every keyed delivery to its (ordering key, delivery
    id): the platform's acceptance order of the key at that endpoint.  Receipts of any status
    count (the receiver saw the request), taken in arrival order."""
    seen: dict[tuple[str, str], set[int]] = {}
    highest: dict[tuple[str, str], int] = {}
    violations = 0
    examples: list[str] = []
    for receipt in sorted(receipts, key=lambda r: r.arrived):
        pair = (receipt.webhook_id, receipt.path)
        if pair not in keyed:
            continue
        key, rank = keyed[pair]
        stream = (receipt.path, key)
        got = seen.setdefault(stream, set())
        if rank in got:
            continue
        if rank < highest.get(stream, -1):
            violations += 1
            if len(examples) < 10:
                examples.append(f"{receipt.path} key {key}: {receipt.webhook_id} after a later one")
        got.add(rank)
        highest[stream] = max(rank, highest.get(stream, -1))
    return OrderingReport(
        keyed_deliveries=len(keyed),
        keys=len({(path, key) for (_, path), (key, _) in keyed.items()}),
        violations=violations,
        examples=examples,
    )


def keyed_deliveries(engine: Engine, paths: Iterable[str]) -> dict[Pair, tuple[str, int]]:
    """(event id, endpoint path) -> (ordering key, delivery id) of every keyed delivery to
    the endpoints at ``paths``."""
    wanted = set(paths)
    rows: dict[Pair, tuple[str, int]] = {}
    with engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT m.event_id, e.url, d.ordering_key, d.id FROM deliveries d "
                "JOIN messages m ON m.id = d.message_id JOIN endpoints e ON e.id = d.endpoint_id "
                "WHERE d.ordering_key IS NOT NULL"
            )
        )
        for event_id, url, key, delivery_id in result:
            path = urlsplit(url).path
            if path in wanted:
                rows[(event_id, path)] = (key, delivery_id)
    return rows
