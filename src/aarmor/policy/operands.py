"""What every operator builder shares: the error types, the load-time context and the value helpers.

Rules this module enforces:
- An invalid operator argument raises `OperatorArgError` at load (a one-line message; the caller adds file,
  rule and line); a value of the wrong type at evaluation raises `EvalError`, so the rule errors and the
  PDP fails closed instead of the test being silently false.
- Empty means no: an operator given an empty list is refused.
- Booleans are never numbers: `true` does not equal `1` and is not accepted where a number is expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aarmor.limits import Limits

__all__ = [
    "EvalError",
    "OpContext",
    "OperatorArgError",
    "Pred",
    "bool_arg",
    "is_num",
    "is_seq",
    "number_arg",
    "same",
    "scalar_list",
    "show",
    "type_name",
]

Pred = Callable[[Any], bool]


class OperatorArgError(ValueError):
    """An operator's argument is invalid (raised at load; the caller adds file, rule and line)."""


class EvalError(Exception):
    """A value has the wrong type for an operator at evaluation time (the rule fails closed)."""


@dataclass(frozen=True, slots=True)
class OpContext:
    internal_domains: tuple[str, ...]
    limits: Limits


def is_num(v: Any) -> bool:
    """True for an int or a float, never for a bool."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_seq(v: Any) -> bool:
    """True for a list-like value (tuple, list, set, frozenset)."""
    return isinstance(v, tuple | list | frozenset | set)


def type_name(v: Any) -> str:
    """The policy-language name of `v`'s type, for messages and the `type` operator."""
    if isinstance(v, bool):
        return "boolean"
    if is_num(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if is_seq(v):
        return "list"
    if isinstance(v, Mapping):
        return "object"
    return type(v).__name__


def show(v: Any) -> str:
    """`v` for a one-line message, cut to 60 characters."""
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


def same(a: Any, b: Any) -> bool:
    """Equality in which a boolean only equals a boolean of the same value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def scalar_list(arg: Any, op: str, *, allow_scalar: bool = True) -> tuple[Any, ...]:
    """`arg` as a non-empty tuple of scalars (a lone scalar counts as a list of one if `allow_scalar`).

    Raises:
        OperatorArgError: not a list, an empty list, or a list holding lists or mappings.
    """
    if is_seq(arg):
        items = tuple(arg)
    elif allow_scalar and not isinstance(arg, Mapping):
        items = (arg,)
    else:
        raise OperatorArgError(f"`{op}` expects a list, found {type_name(arg)}")
    if not items:
        raise OperatorArgError(f"`{op}` has an empty list (empty means no: list at least one value)")
    for i in items:
        if isinstance(i, Mapping) or is_seq(i):
            raise OperatorArgError(f"`{op}` expects scalar values, found {type_name(i)}")
    return items


def number_arg(arg: Any, op: str) -> float:
    """`arg` checked to be a number.

    Raises:
        OperatorArgError: not a number (a boolean is not one).
    """
    if not is_num(arg):
        raise OperatorArgError(f"`{op}` expects a number, found {type_name(arg)} `{show(arg)}`")
    return arg  # type: ignore[no-any-return]


def bool_arg(arg: Any, op: str) -> bool:
    """`arg` checked to be `true` or `false`.

    Raises:
        OperatorArgError: not a boolean.
    """
    if not isinstance(arg, bool):
        raise OperatorArgError(f"`{op}` expects true or false, found {type_name(arg)} `{show(arg)}`")
    return arg
