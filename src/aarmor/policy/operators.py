"""Condition operators: argument validation at load, and the predicates the matchers run.

Rules this module enforces:
- Every operator validates its argument when the policy loads (`OperatorArgError`, a one-line message);
  regexes are compiled here, once, within `Limits.max_regex_length`.
- A predicate gets the resolved value and returns True/False. A value of the wrong type for the operator
  (a string compared with `gt`, a number matched against a regex) raises `EvalError`: the rule errors and
  the PDP fails closed; it is never silently false.
- The domain operators (`domain_in`, `domain_not_in`, `external`) and host extraction live in `domains.py`;
  the error types, `OpContext` and the value helpers in `operands.py`; this module re-exports what its
  callers import.
- Classification levels are ordered PUBLIC < INTERNAL < CONFIDENTIAL < RESTRICTED.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aarmor.policy.domains import build_domain_in, build_domain_not_in, build_external, extract_hosts, host_in
from aarmor.policy.facts import MISSING, UNPOPULATED
from aarmor.policy.operands import (
    EvalError,
    OpContext,
    OperatorArgError,
    Pred,
    bool_arg,
    is_num,
    is_seq,
    number_arg,
    same,
    scalar_list,
    show,
    type_name,
)

__all__ = [
    "ALIASES",
    "LEVELS",
    "OPERATORS",
    "EvalError",
    "OpContext",
    "OperatorArgError",
    "Pred",
    "build",
    "extract_hosts",
    "host_in",
]

LEVELS = {"PUBLIC": 0, "INTERNAL": 1, "CONFIDENTIAL": 2, "RESTRICTED": 3}


# --- comparisons -------------------------------------------------------------------------------


def _cmp(op: str, fn: Callable[[float, float], bool]) -> Callable[[Any, OpContext], Pred]:
    def build_cmp(arg: Any, ctx: OpContext) -> Pred:
        n = number_arg(arg, op)

        def pred(v: Any) -> bool:
            if not is_num(v):
                raise EvalError(f"`{op}` expects a number, found {type_name(v)} `{show(v)}`")
            return fn(v, n)

        return pred

    return build_cmp


def _b_is(arg: Any, ctx: OpContext) -> Pred:
    # A bare scalar: equality, or membership when the field holds a list (roles, classifications).
    if isinstance(arg, Mapping):
        raise OperatorArgError("a bare value must be a scalar")
    return lambda v: any(same(x, arg) for x in v) if is_seq(v) else same(v, arg)


def _b_any_of(arg: Any, ctx: OpContext) -> Pred:
    # A bare list: any of; for a list-valued field, any overlap.
    items = scalar_list(arg, "list")
    return lambda v: any(same(x, i) for x in v for i in items) if is_seq(v) else any(same(v, i) for i in items)


def _b_eq(arg: Any, ctx: OpContext) -> Pred:
    return lambda v: same(v, arg)


def _b_ne(arg: Any, ctx: OpContext) -> Pred:
    return lambda v: not same(v, arg)


def _b_in(arg: Any, ctx: OpContext) -> Pred:
    return _b_any_of(scalar_list(arg, "in", allow_scalar=False), ctx)


def _b_not_in(arg: Any, ctx: OpContext) -> Pred:
    inner = _b_in(arg, ctx)
    return lambda v: not inner(v)


def _contains_fn(arg: Any, op: str) -> Pred:
    items = scalar_list(arg, op)
    folded = tuple(i.casefold() for i in items if isinstance(i, str))

    def pred(v: Any) -> bool:
        if isinstance(v, str):
            # Substrings compare case-insensitively: `DROP`, `drop` and `Drop` are one attack.
            text = v.casefold()
            return any(i in text for i in folded)
        if is_seq(v):
            return any(same(x, i) for x in v for i in items)
        if isinstance(v, Mapping):
            return any(i in v for i in items if isinstance(i, str))
        raise EvalError(f"`{op}` expects a string, list or object, found {type_name(v)} `{show(v)}`")

    return pred


def _b_contains(arg: Any, ctx: OpContext) -> Pred:
    return _contains_fn(arg, "contains")


def _b_not_contains(arg: Any, ctx: OpContext) -> Pred:
    inner = _contains_fn(arg, "not_contains")
    return lambda v: not inner(v)


def _b_matches(arg: Any, ctx: OpContext) -> Pred:
    if not isinstance(arg, str):
        raise OperatorArgError(f"`matches` expects a regular expression string, found {type_name(arg)}")
    if len(arg) > ctx.limits.max_regex_length:
        raise OperatorArgError(
            f"regular expression of {len(arg)} characters exceeds limit "
            f"`max_regex_length` ({ctx.limits.max_regex_length})"
        )
    try:
        rx = re.compile(arg)
    except re.error as exc:
        raise OperatorArgError(f"invalid regular expression `{show(arg)}`: {exc}") from exc
    search = rx.search

    def pred(v: Any) -> bool:
        if isinstance(v, str):
            return search(v) is not None
        if is_seq(v):
            return any(isinstance(x, str) and search(x) is not None for x in v)
        raise EvalError(f"`matches` expects a string, found {type_name(v)} `{show(v)}`")

    return pred


def _b_exists(arg: Any, ctx: OpContext) -> Pred:
    want = bool_arg(arg, "exists")
    return lambda v: (v is not MISSING and v is not UNPOPULATED and v is not None) == want


_TYPES = {"string", "number", "integer", "boolean", "list", "array", "object", "null"}


def _b_type(arg: Any, ctx: OpContext) -> Pred:
    if not isinstance(arg, str) or arg not in _TYPES:  # a list or mapping would not even hash
        raise OperatorArgError(f"`type` expects one of {', '.join(sorted(_TYPES))}, found `{show(arg)}`")
    want = "list" if arg == "array" else arg

    def pred(v: Any) -> bool:
        if v is MISSING or v is UNPOPULATED:
            return False
        if v is None:
            return want == "null"
        if want == "integer":
            return isinstance(v, int) and not isinstance(v, bool)
        return type_name(v) == want

    return pred


def _b_length(arg: Any, ctx: OpContext) -> Pred:
    if isinstance(arg, Mapping):
        preds = [
            build(op, a, ctx)[1]
            for op, a in arg.items()
            if op in ("eq", "ne", "gt", "gte", "lt", "lte") or _raise_len(op)
        ]
        if not preds:
            raise OperatorArgError("`length` has an empty mapping (empty means no)")
    elif is_num(arg) and isinstance(arg, int):
        preds = [lambda n: n == arg]
    else:
        raise OperatorArgError(f"`length` expects an integer or a mapping of comparisons, found {type_name(arg)}")

    def pred(v: Any) -> bool:
        if not isinstance(v, str | Mapping) and not is_seq(v):
            raise EvalError(f"`length` expects a string, list or object, found {type_name(v)}")
        n = len(v)
        return all(p(n) for p in preds)

    return pred


def _raise_len(op: str) -> bool:
    raise OperatorArgError(f"`length` accepts eq, ne, gt, gte, lt, lte; found `{op}`")


# --- classifications, categories, uncertainty ---------------------------------------------------------


def _b_higher_than(arg: Any, ctx: OpContext) -> Pred:
    if not isinstance(arg, str) or arg.upper() not in LEVELS:
        raise OperatorArgError(f"`higher_than` expects one of {', '.join(LEVELS)}, found `{show(arg)}`")
    rank = LEVELS[arg.upper()]

    def pred(v: Any) -> bool:
        labels = (v,) if isinstance(v, str) else tuple(v) if is_seq(v) else None
        if labels is None:
            raise EvalError(f"`higher_than` expects a classification or a list of them, found {type_name(v)}")
        return any(isinstance(x, str) and LEVELS.get(x.upper(), -1) > rank for x in labels)

    return pred


def _b_contains_classification(arg: Any, ctx: OpContext) -> Pred:
    items = tuple(str(i).upper() for i in scalar_list(arg, "contains_classification"))

    def pred(v: Any) -> bool:
        labels = (v,) if isinstance(v, str) else tuple(v) if is_seq(v) else None
        if labels is None:
            raise EvalError(f"`contains_classification` expects classification labels, found {type_name(v)}")
        return any(isinstance(x, str) and x.upper() in items for x in labels)

    return pred


def _b_category(arg: Any, ctx: OpContext) -> Pred:
    return _b_any_of(scalar_list(arg, "category"), ctx)


def _b_unknown_or_conflicting(arg: Any, ctx: OpContext) -> Pred:
    want = bool_arg(arg, "unknown_or_conflicting")

    def pred(v: Any) -> bool:
        if v is MISSING or v is UNPOPULATED or v is None:
            unk = True
        elif isinstance(v, str):
            unk = v.casefold() in ("conflicting", "unknown")
        elif is_seq(v):
            unk = len({repr(x) for x in v}) > 1
        else:
            unk = False
        return unk == want

    return pred


#: name -> (builder, handles absent values itself)
OPERATORS: dict[str, tuple[Callable[[Any, OpContext], Pred], bool]] = {
    "eq": (_b_eq, False),
    "ne": (_b_ne, False),
    "gt": (_cmp("gt", lambda a, b: a > b), False),
    "gte": (_cmp("gte", lambda a, b: a >= b), False),
    "lt": (_cmp("lt", lambda a, b: a < b), False),
    "lte": (_cmp("lte", lambda a, b: a <= b), False),
    "in": (_b_in, False),
    "not_in": (_b_not_in, False),
    "contains": (_b_contains, False),
    "not_contains": (_b_not_contains, False),
    "matches": (_b_matches, False),
    "exists": (_b_exists, True),
    "type": (_b_type, True),
    "length": (_b_length, False),
    "domain_in": (build_domain_in, False),
    "domain_not_in": (build_domain_not_in, False),
    "external": (build_external, False),
    "higher_than": (_b_higher_than, False),
    "contains_classification": (_b_contains_classification, False),
    "category": (_b_category, False),
    "unknown_or_conflicting": (_b_unknown_or_conflicting, True),
    # internal: the meaning of a bare scalar / bare list
    "is": (_b_is, False),
    "any_of": (_b_any_of, False),
}

ALIASES = {
    "regex": "matches",
    "greater_than": "gt",
    "less_than": "lt",
    "greater_than_or_equal": "gte",
    "less_than_or_equal": "lte",
    "domain_allowlist": "domain_not_in",  # as an operator: true when the allowlist is violated
    "not_equals": "ne",
    "equals": "eq",
}

PUBLIC_NAMES = sorted([*(k for k in OPERATORS if k not in ("is", "any_of")), *ALIASES, "not"])


def build(op: str, arg: Any, ctx: OpContext, *, internal: bool = False) -> tuple[str, Pred]:
    """Validate `arg` for operator `op` (aliases folded) and return (canonical name, predicate).

    `internal=True` admits the two internal operators `is` (bare scalar) and `any_of` (bare list).

    Raises:
        OperatorArgError: unknown operator or invalid argument.
    """
    name = ALIASES.get(op, op)
    entry = OPERATORS.get(name)
    if entry is None or (op in ("is", "any_of") and not internal):
        raise OperatorArgError(f"unknown operator `{op}`, expected one of {', '.join(PUBLIC_NAMES)}")
    return name, entry[0](arg, ctx)


def handles_absent(op: str) -> bool:
    return OPERATORS[op][1]
