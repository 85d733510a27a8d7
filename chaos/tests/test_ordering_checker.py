"""The chaos checker's ordering check against synthetic receipt logs: a key's messages must
arrive at each endpoint in acceptance order, where any may arrive again as an exact repeat."""

from __future__ import annotations

from bench.receiver import Receipt
from chaos.checker import ChaosReport, check_ordering, passed

# (event id, path) -> (ordering key, delivery id): two keys at /a, one at /b.
KEYED = {
    ("e1", "/a"): ("k", 1),
    ("e2", "/a"): ("k", 2),
    ("e3", "/a"): ("k", 3),
    ("x1", "/a"): ("j", 4),
    ("x2", "/a"): ("j", 5),
    ("e1", "/b"): ("k", 6),
    ("e2", "/b"): ("k", 7),
}


def log(*arrivals: tuple[str, str] | tuple[str, str, int]) -> list[Receipt]:
    """Receipts in the given arrival order (status 200 unless given), shuffled in the log:
    the checker must order them by arrival itself."""
    receipts = [
        Receipt(float(t), a[0], a[1], 1, a[2] if len(a) == 3 else 200)
        for t, a in enumerate(arrivals)
    ]
    return receipts[::2] + receipts[1::2]


def test_in_order_with_other_keys_and_endpoints_interleaved_passes() -> None:
    report = check_ordering(
        KEYED,
        log(("e1", "/a"), ("x1", "/a"), ("e1", "/b"), ("e2", "/a"), ("x2", "/a"), ("e3", "/a")),
    )
    assert report.violations == 0
    assert report.keyed_deliveries == 7
    assert report.keys == 3
    assert report.passed


def test_exact_repeats_of_earlier_arrivals_are_allowed() -> None:
    # A failed first try (500), then a worker's rerun of a cut-short run from its start.
    report = check_ordering(
        KEYED,
        log(
            ("e1", "/a", 500),
            ("e1", "/a"),
            ("e2", "/a"),
            ("e1", "/a"),
            ("e2", "/a"),
            ("e3", "/a"),
            ("e2", "/a"),
        ),
    )
    assert report.violations == 0


def test_a_message_first_arriving_after_a_later_one_is_a_violation() -> None:
    report = check_ordering(KEYED, log(("e2", "/a"), ("e1", "/a"), ("e3", "/a")))
    assert report.violations == 1
    assert not report.passed
    assert report.examples == ["/a key k: e1 after a later one"]
    # Each endpoint has its own sequence: order at /b says nothing about /a.
    assert check_ordering(KEYED, log(("e2", "/a"), ("e1", "/b"), ("e2", "/b"))).violations == 0
    assert check_ordering(KEYED, log(("e2", "/b"), ("e1", "/b"))).violations == 1


def test_unkeyed_and_unknown_receipts_are_ignored() -> None:
    report = check_ordering(KEYED, log(("e3", "/a"), ("u1", "/a"), ("e9", "/c"), ("x2", "/a")))
    assert report.violations == 0


def test_a_violation_fails_the_run() -> None:
    healthy = ChaosReport(1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
    bad = check_ordering(KEYED, log(("e2", "/a"), ("e1", "/a")))
    good = check_ordering(KEYED, log(("e1", "/a"), ("e2", "/a")))
    assert not passed(healthy, None, bad)
    assert passed(healthy, None, good)
    assert passed(healthy, None)
    assert bad.line() == "chaos-ordering: keyed_deliveries=7 keys=3 violations=1"
