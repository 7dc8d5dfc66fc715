"""Normalisation of untrusted calls into `Action`s (AARM 2.1: idempotent, complete, identity attached).

Rules this module enforces:
- Tool and operation names: default-ignorable code points (zero-width joiners, soft hyphens, bidi
  controls) are removed, then NFKC, then case-folded, then surrounding whitespace stripped. What remains
  must be printable ASCII from `[a-z0-9_.:/-]`: a confusable spelling (Cyrillic `е` in `еmail`) is an
  `InputError`, never a different tool that a rule would not match.
- Domains (`normalize_domain`): NFKC, case-fold, trailing dot removed, IDNA 2008 to A-labels, so
  `EXAMPLE.com.`, `example.com` and full-width spellings compare equal and homographs become `xn--`.
- Arguments: JSON values only, within `Limits` (bytes, depth); keys must be strings. They are deep-frozen.
- Idempotence: the same (tool, operation, arguments, identity, session, id, time) gives an equal Action,
  and normalising a normalised name is the identity.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import idna

from aarmor.canonical import TAG_PARAM, digest, plain_and_bytes
from aarmor.errors import InputError, LimitExceeded
from aarmor.limits import DEFAULT_LIMITS, Limits
from aarmor.model import Action, FrozenMap, Identity, freeze

__all__ = ["new_action_id", "normalize_action", "normalize_domain", "normalize_name", "split_tool"]

_NAME_OK = re.compile(r"[a-z0-9_.:/\-]+")

# Names already normalised, by raw spelling: an agent calls the same few tools over and over, and NFKC
# plus the per-character category scan cost microseconds per call.
# INVARIANT: `_normalize_name_text` is a pure function of the text, so a memo hit returns exactly what
# recomputing would; only successes are stored (a refused name raises again every time), the length
# limit is checked before the memo, and the memo is bounded (cleared when full).
_NAME_MEMO: dict[str, str] = {}
_NAME_MEMO_MAX = 1024


def _strip_ignorable(text: str) -> str:
    # Cf (format) covers zero-width space/joiners, bidi controls, soft hyphen; also drop variation selectors.
    return "".join(
        ch for ch in text
        if unicodedata.category(ch) != "Cf" and not (0xFE00 <= ord(ch) <= 0xFE0F)
    )


def normalize_name(name: str, *, what: str = "tool name", limits: Limits = DEFAULT_LIMITS) -> str:
    """Normalise a tool or operation name.

    Raises:
        InputError: empty, too long, or containing characters outside `[a-z0-9_.:/-]` after NFKC and
            case-folding (the message names the first offending code point).
    """
    if not isinstance(name, str):
        raise InputError(f"{what} must be a string, found {type(name).__name__}")
    if len(name) > limits.max_name_length:
        raise LimitExceeded("max_name_length", limits.max_name_length, len(name), what)
    if type(name) is str:  # a str subclass could override methods: never memoised
        hit = _NAME_MEMO.get(name)
        if hit is not None:
            return hit
    text = _normalize_name_text(name, what)
    if type(name) is str:
        if len(_NAME_MEMO) >= _NAME_MEMO_MAX:
            _NAME_MEMO.clear()
        _NAME_MEMO[name] = text
    return text


def _normalize_name_text(name: str, what: str) -> str:
    text = unicodedata.normalize("NFKC", _strip_ignorable(name)).casefold().strip()
    if not text:
        raise InputError(f"{what} `{name}` is empty after normalisation")
    if not _NAME_OK.fullmatch(text):
        bad = next(ch for ch in text if not _NAME_OK.fullmatch(ch))
        raise InputError(
            f"{what} `{name}` contains `{bad}` (U+{ord(bad):04X}); expected letters, digits and `_.:/-` "
            "(confusable or non-ASCII names are refused)"
        )
    return text


def split_tool(tool: str, operation: str | None) -> tuple[str, str]:
    """Split `email.send` into (`email`, `send`) when no operation is given.

    Only the last dot splits (`db.customers.query` -> `db.customers`, `query`). A name without a dot
    (most MCP tools: `read_file`) has the empty operation; a rule without `operation` matches it.
    """
    if operation is not None:
        return tool, operation
    if "." in tool:
        head, _, tail = tool.rpartition(".")
        if head and tail:
            return head, tail
    return tool, ""


def normalize_domain(text: str) -> str:
    """Normalise a host or the domain part of an e-mail address or URL.

    Raises:
        InputError: if the domain is not a valid IDNA 2008 name.
    """
    host = unicodedata.normalize("NFKC", _strip_ignorable(text)).casefold().strip().rstrip(".")
    if not host:
        raise InputError(f"domain `{text}` is empty")
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InputError(f"domain `{text}` is not a valid internationalised name: {exc}") from exc


def _check_depth(value: Any, limit: int, depth: int = 0) -> None:
    if depth > limit:
        raise LimitExceeded("max_argument_depth", limit, depth, "arguments nesting depth")
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return  # a leaf (exact types only: the ABC checks below are slow and these cannot nest)
    if isinstance(value, Mapping):
        for v in value.values():
            _check_depth(v, limit, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_depth(v, limit, depth + 1)


def normalize_arguments(arguments: Any, *, limits: Limits = DEFAULT_LIMITS) -> FrozenMap:
    """Validate and deep-freeze call arguments (see `normalize_arguments_digest`)."""
    return normalize_arguments_digest(arguments, limits=limits)[0]


def normalize_arguments_digest(arguments: Any, *, limits: Limits = DEFAULT_LIMITS) -> tuple[FrozenMap, str]:
    """Validate and deep-freeze call arguments; also return their digest (`TAG_PARAM`).

    Raises:
        InputError: not a mapping, not JSON-serialisable (naming the path), too deep or too large.
    """
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise InputError(f"arguments must be a JSON object, found {type(arguments).__name__}")
    _check_depth(arguments, limits.max_argument_depth)
    plain, raw = plain_and_bytes(arguments, path="arguments")
    if len(raw) > limits.max_argument_bytes:
        raise LimitExceeded("max_argument_bytes", limits.max_argument_bytes, len(raw), "arguments")
    frozen = freeze(plain)
    assert isinstance(frozen, FrozenMap)
    return frozen, digest(TAG_PARAM, raw=raw)


def _joined(tool: str, op: str, explicit_op: str | None) -> str:
    return f"{tool}.{op}" if explicit_op is None and op else tool


def new_action_id() -> str:
    return "act_" + uuid.uuid4().hex


def normalize_action(
    tool: str,
    arguments: Any,
    *,
    operation: str | None,
    identity: Identity,
    session_id: str,
    now: datetime,
    action_id: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Action:
    """Build the canonical `Action` for one call.

    Raises:
        InputError: for any name or argument that cannot be normalised (see module docstring).
    """
    raw_tool, raw_op = split_tool(tool, operation) if isinstance(tool, str) else (tool, operation)
    norm_tool = normalize_name(raw_tool, what="tool name", limits=limits)
    norm_op = normalize_name(raw_op, what="operation", limits=limits) if raw_op else ""
    params, params_digest = normalize_arguments_digest(arguments, limits=limits)
    return Action(
        action_id=action_id or new_action_id(),
        timestamp=now,
        tool=norm_tool,
        operation=norm_op,
        parameters=params,
        identity=identity,
        session_id=session_id,
        raw_tool=None if tool == _joined(norm_tool, norm_op, operation) else tool,
        parameters_digest=params_digest,
    )
