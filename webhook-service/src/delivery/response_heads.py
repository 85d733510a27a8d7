"""Refusing a response whose head is incomplete or malformed.

http.client ends the header block at end of file as if it were the blank line, and takes a
status line without its CRLF: a head cut off by a closed connection would parse, an empty body
would be read to the close, and the attempt would look delivered.  :class:`CheckedResponse`
raises :class:`IncompleteHead` instead, which the sender counts as a failed attempt.
"""

from __future__ import annotations

import http.client
from typing import Any

from urllib3.exceptions import HeaderParsingError
from urllib3.util.response import assert_header_parsing


class IncompleteHead(http.client.HTTPException):
    """The response's status line or headers were cut off or malformed."""


class _HeadReader:
    """The response's file while its head is read; notes a line that ends without its LF.

    http.client ends the header block at end of file as if it were the blank line, and
    takes a status line without its CRLF: a head cut off by a closed connection parses.
    """

    def __init__(self, fp: Any) -> None:
        self.fp = fp
        self.cut = False

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.fp.readline(limit)
        if not line.endswith(b"\n"):
            self.cut = True
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)


class CheckedResponse(http.client.HTTPResponse):
    """An ``http.client`` response that refuses an incomplete or malformed head."""

    def begin(self) -> None:
        reader = _HeadReader(self.fp)
        self.fp = reader  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            fp: Any = self.fp
            if fp is reader:  # begin() drops fp when there is no body
                self.fp = reader.fp
        if reader.cut:
            raise IncompleteHead("the response was cut off in its status line or headers")
        try:
            assert_header_parsing(self.msg)
        except HeaderParsingError as exc:
            raise IncompleteHead(f"malformed response headers ({exc})") from None
