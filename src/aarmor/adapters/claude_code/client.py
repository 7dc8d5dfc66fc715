"""A small JSON client of `aarmor serve` (docs/http-api.md) bounded by one deadline.

The hook is a new process per Claude Code event, so start-up time counts: this uses only the standard
library (urllib), never httpx or the server stack. Every request's socket timeout is what is left of the
invocation's budget, so no single call can outlive it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["ApiAnswer", "HookError", "ServerClient"]


class HookError(Exception):
    """Anything that stops the hook from reaching a decision: the hook fails closed with this message."""


class ApiAnswer(Exception):
    """The server answered with an error status (its JSON error, docs/http-api.md "Errors")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"aarmor server answered {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # a redirect would carry the bearer token to wherever it points (and turn a POST into a GET): refuse it
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class ServerClient:
    """Authenticated JSON calls to one aarmor server until `deadline` (a `time.monotonic()` value)."""

    def __init__(self, url: str, token: str, deadline: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise HookError(f"the aarmor server URL must be http(s)://HOST:PORT, found `{url}`")
        self.url = url.rstrip("/")
        self._token = token
        self.deadline = deadline

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; its JSON answer.

        Raises:
            ApiAnswer: the server answered 4xx/5xx with its JSON error.
            HookError: no time left, the server is unreachable or timed out, or the answer is not JSON.
        """
        left = self.left()
        if left <= 0:
            raise HookError("the hook's time budget ran out before aarmor answered")
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with _OPENER.open(req, timeout=left) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _answer(exc) from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, socket timeout
            reason = getattr(exc, "reason", exc)
            raise HookError(f"the aarmor server at {self.url} is unreachable or did not answer in time: "
                            f"{reason}") from exc
        try:
            out = json.loads(raw)
        except ValueError as exc:
            raise HookError(f"the aarmor server at {self.url} answered something that is not JSON") from exc
        if not isinstance(out, dict):
            raise HookError(f"the aarmor server at {self.url} answered JSON that is not an object")
        return out


def _answer(exc: urllib.error.HTTPError) -> ApiAnswer:
    try:
        err = json.loads(exc.read()).get("error", {})
        return ApiAnswer(exc.code, str(err.get("code", "error")), str(err.get("message", "")))
    except Exception:  # not aarmor's JSON error (a proxy's page, say): the status is all there is
        return ApiAnswer(exc.code, "error", str(exc.reason))
