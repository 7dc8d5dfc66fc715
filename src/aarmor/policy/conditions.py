"""Conditions: one field path plus the operator tests on it, three-valued.

A condition evaluates to TRUE, FALSE or UNKNOWN. UNKNOWN means the path resolved to an unpopulated
context field (AARM R3 DEFER trigger (a)); a missing parameter is FALSE for every operator except
`exists`, `type`, `unknown_or_conflicting` and `not`. `build_block` turns a `match:`, `condition:` or
`trigger:` block into tool/operation patterns and conditions, validating every key and operator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from aarmor.policy.facts import MISSING, UNPOPULATED, Facts, Resolver, resolver_for
from aarmor.policy.operators import (
    ALIASES,
    OPERATORS,
    OpContext,
    OperatorArgError,
    Pred,
    build,
    handles_absent,
)
from aarmor.policy.parse import LMap, line_of

__all__ = ["FALSE", "TRUE", "UNKNOWN", "Block", "Condition", "Test", "build_block", "plain"]

FALSE, TRUE, UNKNOWN = 0, 1, 2

Fail = Callable[[str, int], NoReturn]


def plain(v: Any) -> Any:
    """Located YAML data -> plain JSON-like data (for hashing and explaining)."""
    if isinstance(v, Mapping):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    return v


@dataclass(frozen=True, slots=True)
class Test:
    op: str
    arg: Any
    pred: Pred | None
    absent_ok: bool
    sub: tuple[Test, ...] = ()

    def eval(self, v: Any) -> int:
        if self.op == "not":
            r = all_of(self.sub, v)
            return UNKNOWN if r == UNKNOWN else TRUE - r
        if not self.absent_ok:
            if v is UNPOPULATED:
                return UNKNOWN
            if v is MISSING or v is None:
                return FALSE
        assert self.pred is not None
        return TRUE if self.pred(v) else FALSE

    def to_json(self) -> Any:
        if self.op == "not":
            return ["not", [t.to_json() for t in self.sub]]
        return [self.op, self.arg]


def all_of(tests: tuple[Test, ...], v: Any) -> int:
    res = TRUE
    for t in tests:
        r = t.eval(v)
        if r == FALSE:
            return FALSE
        if r == UNKNOWN:
            res = UNKNOWN
    return res


@dataclass(frozen=True, slots=True)
class Condition:
    path: str
    resolve: Resolver
    tests: tuple[Test, ...]
    line: int

    def eval(self, facts: Facts) -> int:
        """Raises EvalError when the value has the wrong type for an operator."""
        return all_of(self.tests, self.resolve(facts))

    def to_json(self) -> Any:
        return [self.path, [t.to_json() for t in self.tests]]

    def describe(self) -> str:
        def one(t: Test) -> str:
            if t.op == "not":
                return "not(" + ", ".join(one(s) for s in t.sub) + ")"
            name = {"is": "is", "any_of": "any of"}.get(t.op, t.op)
            return f"{name} {t.arg!r}"

        return f"{self.path} " + " and ".join(one(t) for t in self.tests)


def compile_spec(spec: Any, ctx: OpContext, fail: Fail, line: int) -> tuple[Test, ...]:
    """A bare scalar, a bare list, or a mapping of operators -> tests (ANDed)."""
    line = line_of(spec, line)
    try:
        if isinstance(spec, Mapping):
            if not spec:
                fail("empty condition (empty means no: give at least one operator)", line)
            tests = []
            for op, arg in spec.items():
                oline = spec.key_line(op) if isinstance(spec, LMap) else line
                if op == "not":
                    tests.append(Test("not", None, None, True, compile_spec(arg, ctx, fail, oline)))
                    continue
                try:
                    name, pred = build(op, arg, ctx)
                except OperatorArgError as exc:
                    fail(str(exc), oline)
                tests.append(Test(name, plain(arg), pred, handles_absent(name)))
            return tuple(tests)
        if spec is None:
            fail("a bare `null` is not a condition; write `exists: false`", line)
        op = "any_of" if isinstance(spec, list) else "is"
        name, pred = build(op, spec, ctx, internal=True)
        return (Test(name, plain(spec), pred, False),)
    except OperatorArgError as exc:
        fail(str(exc), line)


def _is_op_map(v: Any) -> bool:
    return isinstance(v, Mapping) and bool(v) and all(k == "not" or k in OPERATORS or k in ALIASES for k in v)


@dataclass(slots=True)
class Block:
    tools: list[str]
    operations: list[str]
    conditions: list[Condition]


_NAMESPACES = ("context", "risk_signals", "identity", "sink")
MATCH_KEYS = (
    "tool",
    "operation",
    "category",
    "parameters",
    "params",
    "context",
    "risk_signals",
    "identity",
    "original_request",
    "data_accessed",
    "sink",
    "<dotted.path>",
)


def _names(v: Any, what: str, fail: Fail, line: int) -> list[str]:
    items = list(v) if isinstance(v, list) else [v]
    if not items:
        fail(f"`{what}` is an empty list (empty means no)", line)
    for i in items:
        if not isinstance(i, str) or not i.strip():
            fail(f"`{what}` expects a name or a list of names, found `{i!r}`", line)
    return [str(i) for i in items]


def build_block(block: Any, kind: str, ctx: OpContext, fail: Fail, out: Block) -> None:
    """Add the tool/operation patterns and conditions of one block to `out`.

    `kind` is `match`, `condition` or `trigger`. Bare keys are parameter names in `condition:` (gateway
    dialect, AARM 4.2) and context fields in `trigger:` (drift rules); in `match:` they are an error.
    """
    if not isinstance(block, LMap):
        fail(f"`{kind}` must be a mapping, found `{block!r}`", line_of(block, 0))
    if not block:
        fail(f"`{kind}` is empty (empty means no)", block.line)

    def add(path: str, spec: Any, line: int) -> None:
        try:
            canon, resolve = resolver_for(path)
        except ValueError as exc:
            fail(str(exc), line)
        out.conditions.append(Condition(canon, resolve, compile_spec(spec, ctx, fail, line), line))

    for key, value in block.items():
        line = block.key_line(key)
        if key == "tool":
            if isinstance(value, Mapping):
                for k, v in value.items():
                    if k != "category":
                        fail(f"`tool` accepts a name, a list of names or `category:`, found `{k}`", line)
                    add("risk_signals.tool_category", {"category": v}, line)
            else:
                out.tools.extend(_names(value, "tool", fail, line))
        elif key == "operation":
            out.operations.extend(_names(value, "operation", fail, line))
        elif key == "category":
            add("risk_signals.tool_category", {"category": value}, line)
        elif key in ("parameters", "params"):
            if not isinstance(value, LMap) or not value:
                fail(f"`{key}` must be a non-empty mapping of parameter names to conditions", line)
            for name, spec in value.items():
                add(f"parameters.{name}", spec, value.key_line(name))
        elif key == "original_request" and not _is_op_map(value) and isinstance(value, LMap):
            for name, spec in value.items():
                add(f"original_request.{name}", spec, value.key_line(name))
        elif key in _NAMESPACES:
            if not isinstance(value, LMap) or not value:
                fail(f"`{key}` must be a non-empty mapping of field names to conditions", line)
            for name, spec in value.items():
                add(f"{key}.{name}", spec, value.key_line(name))
        elif key in ("original_request", "data_accessed") or "." in key:
            add(key, spec=value, line=line)
        elif kind == "condition":
            add(f"parameters.{key}", value, line)
        elif kind == "trigger":
            add(f"context.{key}", value, line)
        else:
            fail(
                f"unknown {kind} key `{key}`, expected one of {', '.join(MATCH_KEYS)} "
                "(parameter names go under `parameters:`)",
                line,
            )
