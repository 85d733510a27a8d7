"""The JSON and timestamp rules of webhooks_core.json_input, at their boundaries."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from webhooks_core.json_input import (
    MAX_DEPTH,
    JSONRejected,
    Timestamp,
    loads,
    problems,
)
from webhooks_core.messages.envelope import Envelope


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_is_counted_from_the_outermost_value() -> None:
    assert problems(loads(nested(MAX_DEPTH))) == []
    too_deep = problems(loads(nested(MAX_DEPTH + 1)))
    assert [p.message for p in too_deep] == [f"nested deeper than {MAX_DEPTH} levels"]
    assert too_deep[0].field == ".".join(["0"] * MAX_DEPTH)
    objects = '{"a": ' * (MAX_DEPTH - 1) + "{}" + "}" * (MAX_DEPTH - 1)
    assert problems(loads(objects)) == []


def test_a_document_too_deep_to_parse_is_rejected_without_recursion_error() -> None:
    with pytest.raises(JSONRejected) as rejected:
        loads(nested(200_000))
    assert rejected.value.problems[0].field == "body"


def test_strings_keys_and_numbers() -> None:
    text = '{"ok": "caf\\u00e9 \\ud83d\\ude00", "k\\u0000": 1, "s": ["\\udc00"], "n": [NaN, 1e400]}'
    found = {p.field: p.message for p in problems(loads(text))}
    assert set(found) == {"k\\u0000", "s.0", "n.0", "n.1"}
    assert "NUL" in found["k\\u0000"]
    assert "U+DC00" in found["s.0"]
    assert problems(loads("[1" + "0" * 308 + "]")) == []  # 1e308 as an integer: a double holds it
    assert len(problems(loads("[1" + "0" * 309 + "]"))) == 1
    assert len(problems(loads("[1" + "0" * 5000 + "]"))) == 1  # not even converted
    assert problems(loads("[true, false, null, -0.0, 1.7976931348623157e308]")) == []


def test_problems_are_prefixed_and_bounded() -> None:
    found = problems(loads(json.dumps({"a": ["\x00"] * 100})), "payload")
    assert len(found) == 20
    assert found[0].field == "payload.a.0"


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-01-01T00:00:00+23:59", datetime(2025, 12, 31, 0, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_timestamps_in_range_become_utc(text: str, utc: datetime) -> None:
    value = TypeAdapter(Timestamp).validate_python(text)
    assert value == utc
    assert value.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "1969-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-00:01",
        "2026-01-01T00:00:00+24:00",
    ],
)
def test_timestamps_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Timestamp).validate_python(text)


def test_envelope_timestamps_are_kept_in_utc() -> None:
    """Producers' envelopes too: PostgreSQL refuses an offset of 16 hours or more."""
    envelope = Envelope(type="person.created", data={}, timestamp="2026-01-01T00:00:00+16:00")
    assert envelope.timestamp == datetime(2025, 12, 31, 8, tzinfo=UTC)
    assert envelope.timestamp.tzinfo is UTC
    with pytest.raises(ValidationError):
        Envelope(type="person.created", data={}, timestamp="0001-01-01T00:00:00+01:00")
