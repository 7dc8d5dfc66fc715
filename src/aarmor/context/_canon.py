"""A fast path to RFC 8785 bytes for the context log's hot path (candidate for `aarmor.canonical`).

`rfc8785.dumps` is pure Python (~140 us for a 750-byte log entry); the stdlib's C encoder with sorted
keys and no ASCII escaping produces the same bytes (~20 us) for the values where the two agree:

- strings: both escape only `"`, `\\` and the C0 controls, with the same short forms (\\b \\t \\n \\f \\r)
  and lower-case `\\u00xx` for the rest; lone surrogates cannot be encoded as UTF-8 and fall back;
- object keys: RFC 8785 sorts by UTF-16 code units, Python by code points; the orders agree unless a
  key holds a character at or above U+E000 (then we fall back);
- numbers: integers within +-(2**53 - 1) print the same; a float prints the same only when it is not
  integral and 1e-4 <= |f| < 1e16 (both then print the shortest round-trip digits in fixed notation);
  any other float falls back.

`plain_and_bytes` converts like `canonical.to_json` in the same walk. INVARIANT (tested by a
differential property test): its bytes equal `canonical.canonical_bytes(value)` for every value, and
it raises the same `InputError` for values JSON cannot carry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

import rfc8785

from aarmor.canonical import SAFE_INT, format_ts, to_json
from aarmor.errors import InputError
from aarmor.model import FrozenMap

__all__ = ["plain_and_bytes"]

_ENC = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False,
                        check_circular=False)


class _Unsafe(Exception):
    """The value needs the reference serializer (a float or key the fast path cannot reproduce)."""


def _walk(value: Any, flags: list[bool]) -> Any:
    t = type(value)
    if t is str or value is None or t is bool:
        return value
    if t is dict or t is FrozenMap:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Unsafe
            if not k.isascii() and any(ord(c) >= 0xE000 for c in k):
                flags[0] = False
            tv = type(v)
            out[k] = v if (tv is str or v is None or tv is bool) else _walk(v, flags)
        return out
    if t is int:
        if -SAFE_INT <= value <= SAFE_INT:
            return value
        raise _Unsafe
    if t is list or t is tuple:
        return [v if type(v) is str else _walk(v, flags) for v in value]
    if t is float:
        if not math.isfinite(value):
            raise _Unsafe
        if value.is_integer() or not 1e-4 <= abs(value) < 1e16:
            flags[0] = False
        return value
    if isinstance(value, Enum):
        return _walk(value.value, flags)
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, Mapping):
        return _walk(dict(value), flags)
    if isinstance(value, bool | str | int | float | list | tuple):
        raise _Unsafe  # other subclasses of JSON types: the reference path converts them
    method = getattr(value, "to_json", None)
    if callable(method):
        return _walk(method(), flags)
    raise _Unsafe


def plain_and_bytes(value: Any, *, path: str = "$") -> tuple[Any, bytes]:
    """`(to_json(value), canonical_bytes(value))`, computed in one walk when possible.

    Raises:
        InputError: as `canonical.to_json` / `canonical.canonical_bytes` would.
    """
    flags = [True]
    try:
        plain = _walk(value, flags)
    except (_Unsafe, RecursionError):
        plain = to_json(value, path=path)  # raises the precise InputError if the value is not JSON
        flags[0] = False
    if flags[0]:
        try:
            return plain, _ENC.encode(plain).encode("utf-8")
        except UnicodeEncodeError:
            pass  # lone surrogates: let the reference serializer raise its error
    try:
        return plain, rfc8785.dumps(plain)
    except rfc8785.CanonicalizationError as exc:
        raise InputError(f"`{path}`: cannot canonicalise: {exc}") from exc
