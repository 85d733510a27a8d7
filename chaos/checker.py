"""The chaos checker: joins what the platform stored with what the receivers logged.

Expected deliveries come from outside the platform: every event the producer committed (its
outbox) times every endpoint subscribed to the event's type, by the run's own subscription
table.  Then, per (webhook-id, endpoint):

* **delivered** / **dead**: the platform's final state of the delivery row;
* **lost**: expected, never accepted by the receiver (no 2xx answer), and not dead;
* **duplicates**: accepted receipts beyond the first;
* **phantoms**: receipts the checker did not expect (wrong id, wrong endpoint);
* **bad signatures**: receipts whose Standard Webhooks signature did not verify;
* **unfinished**: expected deliveries that are not delivered or dead (or have no row).

A run passes when lost, phantoms, bad signatures and unfinished are all 0.
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
    unfinished: int
    delivered_without_receipt: int

    @property
    def passed(self) -> bool:
        """Nothing lost, forged, unexpected or left hanging."""
        return not (self.lost or self.phantoms or self.bad_signatures or self.unfinished)

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
    delivered = dead = lost = unfinished = without_receipt = 0
    for pair in expected:
        state = states.get(pair)
        if state == "delivered":
            delivered += 1
            if not accepted[pair]:
                without_receipt += 1
        elif state == "dead":
            dead += 1
        else:
            unfinished += 1
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
        unfinished=unfinished,
        delivered_without_receipt=without_receipt,
    )


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


def outbox_events(producer_engine: Engine) -> list[tuple[str, str]]:
    """(event id, type) of every event the producer committed to its outbox."""
    with producer_engine.connect() as conn:
        return [
            (row[0], row[1])
            for row in conn.execute(text("SELECT event_id, event_type FROM outbox"))
        ]
