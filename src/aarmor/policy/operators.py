"""Condition operators: argument validation at load, and the predicates the matchers run.

Rules this module enforces:
- Every operator validates its argument when the policy loads (`OperatorArgError`, a one-line message);
  regexes are compiled here, once, within `Limits.max_regex_length`.
- A predicate gets the resolved value and returns True/False. A value of the wrong type for the operator
  (a string compared with `gt`, a number matched against a regex) raises `EvalError`: the rule errors and
  the PDP fails closed; it is never silently false.
- Domains go through `aarmor.normalize.normalize_domain`; e-mail addresses and URLs contribute their host;
  a domain in a list also covers its subdomains.
- Classification levels are ordered PUBLIC < INTERNAL < CONFIDENTIAL < RESTRICTED.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aarmor.errors import InputError
from aarmor.limits import Limits
from aarmor.normalize import normalize_domain
from aarmor.policy.facts import MISSING, UNPOPULATED

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

Pred = Callable[[Any], bool]


class OperatorArgError(ValueError):
    """An operator's argument is invalid (raised at load; the caller adds file, rule and line)."""


class EvalError(Exception):
    """A value has the wrong type for an operator at evaluation time (the rule fails closed)."""


@dataclass(frozen=True, slots=True)
class OpContext:
    internal_domains: tuple[str, ...]
    limits: Limits


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_seq(v: Any) -> bool:
    return isinstance(v, tuple | list | frozenset | set)


def _tname(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if _is_num(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if _is_seq(v):
        return "list"
    if isinstance(v, Mapping):
        return "object"
    return type(v).__name__


def _show(v: Any) -> str:
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _scalar_list(arg: Any, op: str, *, allow_scalar: bool = True) -> tuple[Any, ...]:
    if _is_seq(arg):
        items = tuple(arg)
    elif allow_scalar and not isinstance(arg, Mapping):
        items = (arg,)
    else:
        raise OperatorArgError(f"`{op}` expects a list, found {_tname(arg)}")
    if not items:
        raise OperatorArgError(f"`{op}` has an empty list (empty means no: list at least one value)")
    for i in items:
        if isinstance(i, Mapping) or _is_seq(i):
            raise OperatorArgError(f"`{op}` expects scalar values, found {_tname(i)}")
    return items


def _number(arg: Any, op: str) -> float:
    if not _is_num(arg):
        raise OperatorArgError(f"`{op}` expects a number, found {_tname(arg)} `{_show(arg)}`")
    return arg  # type: ignore[no-any-return]


def _bool(arg: Any, op: str) -> bool:
    if not isinstance(arg, bool):
        raise OperatorArgError(f"`{op}` expects true or false, found {_tname(arg)} `{_show(arg)}`")
    return arg


# --- comparisons -------------------------------------------------------------------------------


def _cmp(op: str, fn: Callable[[float, float], bool]) -> Callable[[Any, OpContext], Pred]:
    def build_cmp(arg: Any, ctx: OpContext) -> Pred:
        n = _number(arg, op)

        def pred(v: Any) -> bool:
            if not _is_num(v):
                raise EvalError(f"`{op}` expects a number, found {_tname(v)} `{_show(v)}`")
            return fn(v, n)

        return pred

    return build_cmp


def _b_is(arg: Any, ctx: OpContext) -> Pred:
    # A bare scalar: equality, or membership when the field holds a list (roles, classifications).
    if isinstance(arg, Mapping):
        raise OperatorArgError("a bare value must be a scalar")
    return lambda v: any(_eq(x, arg) for x in v) if _is_seq(v) else _eq(v, arg)


def _b_any_of(arg: Any, ctx: OpContext) -> Pred:
    # A bare list: any of; for a list-valued field, any overlap.
    items = _scalar_list(arg, "list")
    return lambda v: any(_eq(x, i) for x in v for i in items) if _is_seq(v) else any(_eq(v, i) for i in items)


def _b_eq(arg: Any, ctx: OpContext) -> Pred:
    return lambda v: _eq(v, arg)


def _b_ne(arg: Any, ctx: OpContext) -> Pred:
    return lambda v: not _eq(v, arg)


def _b_in(arg: Any, ctx: OpContext) -> Pred:
    return _b_any_of(_scalar_list(arg, "in", allow_scalar=False), ctx)


def _b_not_in(arg: Any, ctx: OpContext) -> Pred:
    inner = _b_in(arg, ctx)
    return lambda v: not inner(v)


def _contains_fn(arg: Any, op: str) -> Pred:
    items = _scalar_list(arg, op)
    folded = tuple(i.casefold() for i in items if isinstance(i, str))

    def pred(v: Any) -> bool:
        if isinstance(v, str):
            # Substrings compare case-insensitively: `DROP`, `drop` and `Drop` are one attack.
            text = v.casefold()
            return any(i in text for i in folded)
        if _is_seq(v):
            return any(_eq(x, i) for x in v for i in items)
        if isinstance(v, Mapping):
            return any(i in v for i in items if isinstance(i, str))
        raise EvalError(f"`{op}` expects a string, list or object, found {_tname(v)} `{_show(v)}`")

    return pred


def _b_contains(arg: Any, ctx: OpContext) -> Pred:
    return _contains_fn(arg, "contains")


def _b_not_contains(arg: Any, ctx: OpContext) -> Pred:
    inner = _contains_fn(arg, "not_contains")
    return lambda v: not inner(v)


def _b_matches(arg: Any, ctx: OpContext) -> Pred:
    if not isinstance(arg, str):
        raise OperatorArgError(f"`matches` expects a regular expression string, found {_tname(arg)}")
    if len(arg) > ctx.limits.max_regex_length:
        raise OperatorArgError(
            f"regular expression of {len(arg)} characters exceeds limit "
            f"`max_regex_length` ({ctx.limits.max_regex_length})"
        )
    try:
        rx = re.compile(arg)
    except re.error as exc:
        raise OperatorArgError(f"invalid regular expression `{_show(arg)}`: {exc}") from exc
    search = rx.search

    def pred(v: Any) -> bool:
        if isinstance(v, str):
            return search(v) is not None
        if _is_seq(v):
            return any(isinstance(x, str) and search(x) is not None for x in v)
        raise EvalError(f"`matches` expects a string, found {_tname(v)} `{_show(v)}`")

    return pred


def _b_exists(arg: Any, ctx: OpContext) -> Pred:
    want = _bool(arg, "exists")
    return lambda v: (v is not MISSING and v is not UNPOPULATED and v is not None) == want


_TYPES = {"string", "number", "integer", "boolean", "list", "array", "object", "null"}


def _b_type(arg: Any, ctx: OpContext) -> Pred:
    if arg not in _TYPES:
        raise OperatorArgError(f"`type` expects one of {', '.join(sorted(_TYPES))}, found `{_show(arg)}`")
    want = "list" if arg == "array" else arg

    def pred(v: Any) -> bool:
        if v is MISSING or v is UNPOPULATED:
            return False
        if v is None:
            return want == "null"
        if want == "integer":
            return isinstance(v, int) and not isinstance(v, bool)
        return _tname(v) == want

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
    elif _is_num(arg) and isinstance(arg, int):
        preds = [lambda n: n == arg]
    else:
        raise OperatorArgError(
            f"`length` expects an integer or a mapping of comparisons, found {_tname(arg)}"
        )

    def pred(v: Any) -> bool:
        if not isinstance(v, str | Mapping) and not _is_seq(v):
            raise EvalError(f"`length` expects a string, list or object, found {_tname(v)}")
        n = len(v)
        return all(p(n) for p in preds)

    return pred


def _raise_len(op: str) -> bool:
    raise OperatorArgError(f"`length` accepts eq, ne, gt, gte, lt, lte; found `{op}`")


# --- domains ---------------------------------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+'-]+@([\w-]+(?:\.[\w-]+)+)")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^/\s@?#]*@)?(\[[^\]]*\]|[^/\s:?#]+)")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_BARE = re.compile(r"(?://)?([\w-]+(?:\.[\w-]+)+)\.?(?::\d+)?(?:[/?#]\S*)?")
_PLAIN_ADDR = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def _strings(v: Any) -> Iterator[str]:
    if isinstance(v, str):
        yield v
    elif _is_seq(v):
        for x in v:
            yield from _strings(x)
    elif isinstance(v, Mapping):
        for x in v.values():
            yield from _strings(x)


def extract_hosts(v: Any) -> list[str]:
    """Normalised hosts of every e-mail address, URL or bare host name found in `v` (recursively).

    Raises:
        EvalError: a host that is not a valid (internationalised) domain name.
    """
    hosts: list[str] = []
    for s in _strings(v):
        if "@" in s and s.count("@") == 1 and _PLAIN_ADDR.fullmatch(s):  # fast path: one plain address
            found = [s.rpartition("@")[2]]
        else:
            found = [m.group(1) for m in _EMAIL.finditer(s)] if "@" in s else []
        if "://" in s:
            found += [m.group(1) for m in _URL.finditer(s)]
        if not found and "." in s:
            # A host written without a scheme (`evil.com/x`, `//evil.com/x`, `evil.com:8080`) still names
            # its host: leaving out `https://` must not turn an external destination into "no host".
            m = _BARE.fullmatch(s.strip())
            if m and (_IPV4.fullmatch(m.group(1)) or not m.group(1).rpartition(".")[2].isdigit()):
                found = [m.group(1)]  # `1.5` is a number, not a host; `10.0.0.1` is a host
        for h in found:
            h = h.strip("[]")
            if h.isascii():
                # ASCII has no default-ignorable code points and NFKC is the identity on it, so this
                # equals normalize_domain(h) at a fraction of the cost (hot path).
                h = h.lower().strip().rstrip(".")
                if h:
                    hosts.append(h)
                    continue
            try:
                hosts.append(normalize_domain(h))
            except InputError as exc:
                raise EvalError(str(exc)) from exc
    return hosts


def host_in(host: str, domains: tuple[str, ...]) -> bool:
    """True when `host` is one of `domains` or a subdomain of one."""
    return any(host == d or host.endswith("." + d) for d in domains)


def _domain_list(arg: Any, op: str) -> tuple[str, ...]:
    items = _scalar_list(arg, op)
    out = []
    for i in items:
        if not isinstance(i, str):
            raise OperatorArgError(f"`{op}` expects domain names, found {_tname(i)} `{_show(i)}`")
        try:
            out.append(normalize_domain(i.strip().lstrip("*.").lstrip("@")))
        except InputError as exc:
            raise OperatorArgError(f"`{op}`: {exc}") from exc
    return tuple(out)


def _b_domain_in(arg: Any, ctx: OpContext) -> Pred:
    doms = _domain_list(arg, "domain_in")
    return lambda v: any(host_in(h, doms) for h in extract_hosts(v))


def _b_domain_not_in(arg: Any, ctx: OpContext) -> Pred:
    # Violation semantics: true when ANY host found lies outside the list (one bad recipient is enough).
    doms = _domain_list(arg, "domain_not_in")
    return lambda v: any(not host_in(h, doms) for h in extract_hosts(v))


def _b_external(arg: Any, ctx: OpContext) -> Pred:
    want = _bool(arg, "external")
    internal = ctx.internal_domains

    def pred(v: Any) -> bool:
        hosts = extract_hosts(v)
        ext = any(not host_in(h, internal) for h in hosts)
        # `external: false` needs at least one host and every host internal.
        return ext if want else (bool(hosts) and not ext)

    return pred


# --- classifications, categories, uncertainty ---------------------------------------------------------


def _b_higher_than(arg: Any, ctx: OpContext) -> Pred:
    if not isinstance(arg, str) or arg.upper() not in LEVELS:
        raise OperatorArgError(f"`higher_than` expects one of {', '.join(LEVELS)}, found `{_show(arg)}`")
    rank = LEVELS[arg.upper()]

    def pred(v: Any) -> bool:
        labels = (v,) if isinstance(v, str) else tuple(v) if _is_seq(v) else None
        if labels is None:
            raise EvalError(f"`higher_than` expects a classification or a list of them, found {_tname(v)}")
        return any(isinstance(x, str) and LEVELS.get(x.upper(), -1) > rank for x in labels)

    return pred


def _b_contains_classification(arg: Any, ctx: OpContext) -> Pred:
    items = tuple(str(i).upper() for i in _scalar_list(arg, "contains_classification"))

    def pred(v: Any) -> bool:
        labels = (v,) if isinstance(v, str) else tuple(v) if _is_seq(v) else None
        if labels is None:
            raise EvalError(f"`contains_classification` expects classification labels, found {_tname(v)}")
        return any(isinstance(x, str) and x.upper() in items for x in labels)

    return pred


def _b_category(arg: Any, ctx: OpContext) -> Pred:
    return _b_any_of(_scalar_list(arg, "category"), ctx)


def _b_unknown_or_conflicting(arg: Any, ctx: OpContext) -> Pred:
    want = _bool(arg, "unknown_or_conflicting")

    def pred(v: Any) -> bool:
        if v is MISSING or v is UNPOPULATED or v is None:
            unk = True
        elif isinstance(v, str):
            unk = v.casefold() in ("conflicting", "unknown")
        elif _is_seq(v):
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
    "domain_in": (_b_domain_in, False),
    "domain_not_in": (_b_domain_not_in, False),
    "external": (_b_external, False),
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
