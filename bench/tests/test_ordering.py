"""The ordering scenario's violation count and its closing line."""

from __future__ import annotations

from bench.ordering import ordering_line, violations


def test_violations_count_first_arrivals_after_a_later_message_of_the_key() -> None:
    in_order = [(1.0, "a", 0), (2.0, "b", 0), (3.0, "a", 1), (4.0, "a", 1), (5.0, "a", 2)]
    assert violations(in_order) == 0
    # A repeat of an earlier one, after later ones, is allowed (at least once).
    assert violations([(1.0, "a", 0), (2.0, "a", 1), (3.0, "a", 0), (4.0, "a", 2)]) == 0
    # Given in any order: sorted by arrival first.
    assert violations([(3.0, "a", 0), (1.0, "a", 1), (2.0, "a", 2)]) == 1
    assert violations([(1.0, "a", 2), (2.0, "b", 0), (3.0, "a", 1)]) == 1


def test_the_line() -> None:
    results = {
        "ordering": {
            "keys": 1000,
            "endpoints": 50,
            "deliveries": 20000,
            "per_s": 812.4,
            "unordered_per_s": 901.0,
            "ratio": 0.9,
            "violations": 0,
            "failures_injected": 1012,
        }
    }
    assert ordering_line(results) == (
        "bench-ordering: keys=1000 endpoints=50 deliveries=20000 per_s=812 "
        "unordered_per_s=901 ratio=0.90 violations=0 failures_injected=1012"
    )
    assert ordering_line({}).startswith("bench-ordering: keys=1000 endpoints=50 deliveries=0")
