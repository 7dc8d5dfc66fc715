"""The one canonical serializer and the domain-tagged digests (DESIGN.md habit 9).

Everything that is signed, chained or bound by digest goes through `canonical_bytes` (RFC 8785, JSON
Canonicalization Scheme) and `digest`. Each digest is tagged with the structure it belongs to, so a
hash of a log entry can never be replayed as the hash of a receipt or an action.

Large integers: RFC 8785 represents numbers as IEEE doubles, so integers outside +-(2**53 - 1) cannot
be carried exactly. We reject them (`InputError`) rather than silently rounding or re-typing them;
callers pass such values as strings. Floats must be finite.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import rfc8785

from aarmor.errors import InputError

__all__ = [
    "SAFE_INT",
    "TAG_ACTION",
    "TAG_LOG",
    "TAG_OUTPUT",
    "TAG_PARAM",
    "TAG_POLICY",
    "TAG_RECEIPT",
    "b64",
    "canonical_bytes",
    "digest",
    "format_ts",
    "loads_strict",
    "parse_ts",
    "plain_and_bytes",
    "to_json",
]

SAFE_INT = 2**53 - 1

# Domain tags. INVARIANT: one tag per structure; never reuse a tag for a different shape.
TAG_LOG = "aarmor.log.v1"
TAG_RECEIPT = "aarmor.receipt.v1"
TAG_ACTION = "aarmor.action.v1"
TAG_POLICY = "aarmor.policy.v1"
TAG_OUTPUT = "aarmor.output.v1"
TAG_PARAM = "aarmor.param.v1"
#: what an approval is bound to: tool, operation, final parameters, identity, session (single use)
TAG_APPROVAL_BINDING = "aarmor.approval.binding.v1"


def format_ts(ts: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, the timestamp shape of AARM 2.1."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    # isoformat is ~10x faster than strftime, and this runs several times per mediated call
    return ts.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_ts(text: str) -> datetime:
    """Inverse of `format_ts` (accepts any ISO-8601 with an offset)."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp `{text}` has no timezone")
    return ts


def to_json(value: Any, *, path: str = "$") -> Any:
    """Convert `value` into plain JSON values (dict, list, str, int, float, bool, None).

    Accepts mappings with string keys, lists and tuples, enums (by value), timezone-aware datetimes
    (as `format_ts`), and objects with a `to_json()` method.

    Raises:
        InputError: for values JSON cannot carry exactly (non-string keys, NaN or infinite floats,
            integers beyond +-(2**53 - 1), bytes, sets, arbitrary objects), naming the JSON path.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if -SAFE_INT <= value <= SAFE_INT:
            return value
        raise InputError(f"`{path}`: integer outside the JSON-safe range +-(2**53 - 1); pass it as a string")
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise InputError(f"`{path}`: non-finite number `{value}` is not JSON")
    if isinstance(value, Enum):
        return to_json(value.value, path=path)
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"`{path}`: object key `{k!r}` is {type(k).__name__}, expected str")
            out[k] = to_json(v, path=f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [to_json(v, path=f"{path}[{i}]") for i, v in enumerate(value)]
    to_json_method = getattr(value, "to_json", None)
    if callable(to_json_method):
        return to_json(to_json_method(), path=path)
    raise InputError(f"`{path}`: value of type `{type(value).__name__}` is not JSON-serialisable")


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of `value` (after `to_json`).

    Raises:
        InputError: if `value` cannot be represented exactly in JSON.
    """
    return plain_and_bytes(value)[1]


# --- fast path -------------------------------------------------------------------------------------
# `rfc8785.dumps` is pure Python (~140 us for a 750-byte log entry); the stdlib's C encoder with sorted
# keys and no ASCII escaping produces the same bytes (~20 us) where the two agree:
# - strings: both escape only `"`, `\\` and the C0 controls, with the same short forms and lower-case
#   `\\u00xx` for the rest; lone surrogates cannot be encoded as UTF-8 and fall back;
# - object keys: RFC 8785 sorts by UTF-16 code units, Python by code points; the orders agree unless a
#   key holds a character at or above U+E000 (then we fall back);
# - numbers: integers within +-(2**53 - 1) print the same; a float prints the same only when it is not
#   integral and 1e-4 <= |f| < 1e16; any other float falls back.
# INVARIANT (differential property test in tests/test_canonical.py): the bytes equal
# `rfc8785.dumps(to_json(value))` for every value, and the same InputError is raised for non-JSON values.

_ENC = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False,
                        check_circular=False)


class _Unsafe(Exception):
    """The value needs the reference serializer (a float or key the fast path cannot reproduce)."""


def _walk(value: Any, flags: list[bool]) -> Any:
    t = type(value)
    if t is str or value is None or t is bool:
        return value
    if t is dict:
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


def digest(tag: str, value: Any = None, *, raw: bytes | None = None) -> str:
    """`sha256:<hex>` over `tag || 0x00 || canonical_bytes(value)` (or `raw` bytes instead)."""
    body = raw if raw is not None else canonical_bytes(value)
    h = hashlib.sha256(tag.encode("ascii") + b"\x00")
    h.update(body)
    return "sha256:" + h.hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InputError(f"duplicate key `{k}` in JSON object")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise InputError(f"`{name}` is not valid JSON")


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON from untrusted input: duplicate keys, NaN and Infinity are errors.

    Raises:
        InputError: naming the duplicate key or the syntax error position.
    """
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from exc
    except RecursionError:  # `[[[[...` deeper than the decoder's stack: untrusted input, not a crash
        raise InputError("invalid JSON: nested too deeply") from None
