"""What JSON the platform accepts, decided in one place.

Every JSON body of the management API is parsed by :func:`loads` and checked by
:func:`problems` before any view, model or database sees it (see
``webhooks_core.problems``); message envelopes from producers go through :func:`problems` too
(``webhooks_core.messages.envelope``).  The rules are what PostgreSQL ``jsonb`` and
``timestamptz``, the delivery workers and every receiver can hold without surprise:

* nesting at most :data:`MAX_DEPTH` levels (the outermost object or array is level 1);
* no NUL character (U+0000) and no lone UTF-16 surrogate (U+D800..U+DFFF) in any string or
  object key: PostgreSQL refuses the first in ``jsonb`` and ``text``, UTF-8 cannot encode the
  second;
* numbers finite and within what an IEEE 754 double holds (``|x| <= 1.7976931348623157e308``):
  no ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON at all, though Python writes them), no
  ``1e400``, no 400-digit integer;
* timestamps (:data:`Timestamp`) from :data:`MIN_TIMESTAMP` to :data:`MAX_TIMESTAMP`, with a
  UTC offset of less than 24 hours as ISO 8601 allows; they are turned into UTC at once (a
  naive one is taken as UTC), so that PostgreSQL, whose own offsets stop at 15:59, never sees
  the offset.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator

MAX_DEPTH = 64
MAX_NUMBER = sys.float_info.max
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
# More digits than the largest finite double has: refused without converting (Python itself
# refuses to convert more than 4300).
_MAX_INTEGER_DIGITS = 309
_FORBIDDEN_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
_MAX_REPORTED = 20


class JSONRejected(ValueError):
    """A body that is JSON but not JSON the platform accepts; ``problems`` say where."""

    def __init__(self, problems: list[JSONProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class JSONProblem:
    """One rule broken at one place: ``field`` is the dotted path (``payload.items.0.name``)."""

    field: str
    message: str


class _OutOfRange(float):
    """An integer literal too long to convert, kept as infinity for :func:`problems` to report."""


def _parse_int(literal: str) -> int | float:
    digits = len(literal) - literal.startswith("-")
    if digits > _MAX_INTEGER_DIGITS:
        return _OutOfRange("inf")
    return int(literal)


def loads(data: str | bytes) -> Any:
    """Parse ``data`` as JSON; a document too deep to parse is refused, never a RecursionError.

    Raises :class:`JSONRejected` for a document nested too deep for the parser (about a
    thousand levels), and ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``)
    for text that is not JSON.  Anything else parses (``NaN`` too, and nesting deeper than
    :data:`MAX_DEPTH`): :func:`problems` says what is wrong with it, before anything that
    recurses (pydantic, serialisation) sees the value.
    """
    try:
        value = json.loads(data, parse_int=_parse_int)
    except RecursionError:
        # The C parser counts its own nesting against the interpreter's recursion limit and
        # unwinds cleanly; such a document is deeper than MAX_DEPTH by far.
        raise JSONRejected([JSONProblem("body", _too_deep())]) from None
    return value


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels"


def _walk(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any, int]]:
    """Every value under ``value`` with its path and depth, without recursion."""
    stack: list[tuple[tuple[str, ...], Any, int]] = [(path, value, 1)]
    while stack:
        where, item, depth = stack.pop()
        yield where, item, depth
        if depth > MAX_DEPTH:
            continue  # reported by the caller; nothing below it is looked at
        if isinstance(item, dict):
            for key, child in reversed(item.items()):
                named = (*where, _printable(key))
                yield named, key, -1  # the key itself, as a string to check
                stack.append((named, child, depth + 1))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append(((*where, str(index)), item[index], depth + 1))


def _printable(key: str) -> str:
    """A key as it can appear in a field path of a response (escaped where it must be)."""
    return _FORBIDDEN_CHARACTERS.sub(lambda found: f"\\u{ord(found.group()):04x}", key)


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN is not a JSON number"
        if isinstance(value, _OutOfRange) or math.isinf(value):
            return f"numbers must be finite and at most {MAX_NUMBER:.17g} in magnitude"
        return None
    if abs(value) > MAX_NUMBER:
        return f"numbers must be finite and at most {MAX_NUMBER:.17g} in magnitude"
    return None


def _acceptable(value: Any) -> bool:
    """Whether :func:`problems` would find nothing; several times faster, for the usual case."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    forbidden = _FORBIDDEN_CHARACTERS.search
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if forbidden(item):
                return False
        elif kind is dict:
            if item and depth >= MAX_DEPTH:
                return False
            for key, child in item.items():
                if forbidden(key):
                    return False
                stack.append((child, depth + 1))
        elif kind is list:
            if item and depth >= MAX_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif kind is float or kind is _OutOfRange:
            if not math.isfinite(item) or kind is _OutOfRange:
                return False
        elif kind is int and (item > MAX_NUMBER or item < -MAX_NUMBER):
            return False
    return True


def problems(value: Any, prefix: str = "") -> list[JSONProblem]:
    """What is wrong with an already parsed JSON ``value`` (empty when it is acceptable).

    Paths start with ``prefix`` (``"body"`` names the value itself when it is empty).
    """
    if _acceptable(value):
        return []
    found: list[JSONProblem] = []
    root = tuple(prefix.split(".")) if prefix else ()
    for path, item, depth in _walk(value, root):
        field = ".".join(path) or "body"
        message: str | None = None
        if depth > MAX_DEPTH:
            message = _too_deep()
        elif isinstance(item, str):
            forbidden = _FORBIDDEN_CHARACTERS.search(item)
            if forbidden is not None:
                what = "key" if depth == -1 else "string"
                message = (
                    f"the {what} holds a NUL character (U+0000)"
                    if forbidden.group() == "\x00"
                    else f"the {what} holds a lone surrogate (U+{ord(forbidden.group()):04X})"
                )
        elif isinstance(item, int | float):
            message = _number_problem(item)
        if message is not None:
            found.append(JSONProblem(field, message))
            if len(found) >= _MAX_REPORTED:
                break
    return found


def check(value: Any, prefix: str = "") -> Any:
    """``value`` itself when it is acceptable; else :class:`JSONRejected` with every problem."""
    found = problems(value, prefix)
    if found:
        raise JSONRejected(found)
    return value


def utc_timestamp(value: datetime) -> datetime:
    """``value`` in UTC, if it lies within the accepted range (naive values are taken as UTC).

    Raises ``ValueError`` (a field error in a pydantic model) otherwise.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset()
    if offset is not None and abs(offset.total_seconds()) >= 86_400:
        raise ValueError("the UTC offset must be less than 24 hours")
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise ValueError(_range_message()) from None
    if not MIN_TIMESTAMP <= value <= MAX_TIMESTAMP:
        raise ValueError(_range_message())
    return value


def _range_message() -> str:
    return "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z"


Timestamp = Annotated[datetime, AfterValidator(utc_timestamp)]
"""A datetime field under the rules above: in range, and in UTC once validated."""
