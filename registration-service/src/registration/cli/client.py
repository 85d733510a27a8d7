"""A small HTTP client of the management API, for the ``webhooks`` command."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


@dataclass
class ApiError(Exception):
    """The API answered with an error (a problem+json body when it could)."""

    status: int
    title: str
    detail: str | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else "")


class Unreachable(Exception):
    """The API could not be reached at all."""


class ApiClient:
    """Calls ``/api/v1`` with a bearer token; errors become :class:`ApiError`."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["User-Agent"] = "webhooks-cli/1"
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One call; returns the decoded JSON body (None for an empty one)."""
        return self.exchange(method, path, json=json, params=params, headers=headers)[1]

    def exchange(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One call; returns the status code and the decoded JSON body."""
        url = f"{self.base_url}{path}"
        try:
            response = self.http.request(
                method,
                url,
                json=json,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=headers,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {exc.__class__.__name__}") from None
        if response.status_code >= 400:
            raise _error(response)
        if not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            raise ApiError(response.status_code, "The answer is not JSON") from None

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """POST a JSON body."""
        return self.request("POST", path, json=body if body is not None else {}, headers=headers)

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following ``iterator`` until ``done``."""
        cursor: str | None = None
        while True:
            page = self.get(path, **params, iterator=cursor)
            yield from page["data"]
            cursor = page.get("iterator")
            if page.get("done", True) or not cursor:
                return


def _error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiError(response.status_code, response.reason or "Error")
    errors = [
        (str(item.get("field", "")), str(item.get("message", "")))
        for item in body.get("errors") or []
        if isinstance(item, dict)
    ]
    return ApiError(
        int(body.get("status", response.status_code)),
        str(body.get("title", response.reason or "Error")),
        body.get("detail"),
        errors,
    )
