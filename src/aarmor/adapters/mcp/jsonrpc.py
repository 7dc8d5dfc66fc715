"""JSON-RPC 2.0 envelopes as plain dicts: the gateway parses only what it must inspect.

Messages stay `dict`s end to end (no model per message): a request is routed by its `method`, a response
by its `id`, and everything else is passed on as it came.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

__all__ = [
    "INTERNAL_ERROR", "INVALID_PARAMS", "INVALID_REQUEST", "METHOD_NOT_FOUND", "PARSE_ERROR",
    "UPSTREAM_UNAVAILABLE", "LineTooLong", "Message", "RemoteError", "check", "dumps", "error", "is_notification",
    "is_request",
    "is_response", "loads", "obj", "parse", "read_messages", "result",
]

Message = dict[str, Any]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: implementation-defined range (-32000..-32019): an upstream server is not running or went away
UPSTREAM_UNAVAILABLE = -32003
#: a forwarded request its upstream did not answer within `request_timeout` (the SDK's timeout code)
UPSTREAM_TIMEOUT = -32001


class RemoteError(Exception):
    """A JSON-RPC error answer (from an upstream, or one the gateway gives)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_error(self) -> dict[str, Any]:
        e: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            e["data"] = self.data
        return e


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (for optional `params`, `_meta`, `ref`...)."""
    return value if isinstance(value, dict) else {}


def is_request(m: Message) -> bool:
    return "method" in m and "id" in m


def is_notification(m: Message) -> bool:
    return "method" in m and "id" not in m


def is_response(m: Message) -> bool:
    return "method" not in m and "id" in m and ("result" in m or "error" in m)


def result(rid: Any, value: dict[str, Any]) -> Message:
    return {"jsonrpc": "2.0", "id": rid, "result": value}


def error(rid: Any, code: int, message: str, data: Any = None) -> Message:
    return {"jsonrpc": "2.0", "id": rid, "error": RemoteError(code, message, data).to_error()}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # `{"name": "shell", "name": "read_file"}`: parsers disagree on which key wins (Python: the last, some
    # others: the first), so a message the gateway judged one way could run another way downstream. Refused.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key `{k}` in a JSON object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # `1e309` overflows to infinity: not a JSON number we can carry
        raise ValueError(f"number `{text[:40]}` is out of range")
    return value


def parse(raw: bytes | str) -> Any:
    """Decoded JSON from a client, strictly: duplicate keys, NaN/Infinity and numbers that overflow are
    errors, and nesting too deep for the decoder is a parse error (not a RecursionError).

    Raises:
        RemoteError: PARSE_ERROR, saying why.
    """
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteError(PARSE_ERROR, f"parse error: {exc}") from None
    except RecursionError:
        raise RemoteError(PARSE_ERROR, "parse error: JSON nested too deeply") from None


def loads(raw: bytes | str) -> Message:
    """One message off the wire (parsed with `parse`).

    Raises:
        RemoteError: not JSON (PARSE_ERROR) or not a JSON-RPC 2.0 object (INVALID_REQUEST); JSON-RPC batches
            were removed from MCP in 2025-06-18 and are refused too.
    """
    return check(parse(raw))


def check(m: Any) -> Message:
    """`m` (decoded JSON) if it is one JSON-RPC 2.0 message.

    Raises:
        RemoteError: INVALID_REQUEST, saying what is wrong.
    """
    if not isinstance(m, dict) or m.get("jsonrpc") != "2.0":
        raise RemoteError(INVALID_REQUEST, "invalid request: expected one JSON-RPC 2.0 object")
    if "method" in m and not isinstance(m["method"], str):
        raise RemoteError(INVALID_REQUEST, "invalid request: `method` must be a string")
    if ("id" in m and not (m["id"] is None or isinstance(m["id"], (str, int)))) or isinstance(m.get("id"), bool):
        raise RemoteError(INVALID_REQUEST, "invalid request: `id` must be a string or an integer")
    return m


def dumps(m: Message | list[Message]) -> bytes:
    return json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class LineTooLong(Exception):
    """A stdio line longer than the reader's limit: the stream cannot be read further."""


async def read_messages(reader: Any) -> AsyncIterator[Message | RemoteError]:
    """Messages off a stdio stream (an `asyncio.StreamReader`), one JSON object a line, until end of file.

    A line that is not a JSON-RPC message yields its RemoteError (the reader decides what to do with it);
    blank lines are skipped.

    Raises:
        LineTooLong: a line over the reader's limit.
    """
    while True:
        try:
            line = await reader.readline()
        except ValueError:
            raise LineTooLong from None
        if not line:
            return
        if not line.strip():
            continue
        try:
            item: Message | RemoteError = loads(line)
        except RemoteError as exc:
            item = exc
        yield item
