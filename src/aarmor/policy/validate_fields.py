"""Field checks shared by the rule, header and intent-boundary validators, and `re_validation`.

Rules this module enforces (DESIGN.md habits 4, 7):
- Every failure is a `PolicyError` naming file, rule id (when there is one) and line, with expected vs found.
- Empty means no: an empty string list is an error.
- Unknown keys in a mapping are errors that list the allowed keys; numbers are never booleans.
- Durations are non-negative seconds, written as a number or `300ms`, `30s`, `5m`, `1h`, `2d`.
- `re_validation.interval` is `N_actions` with N >= 1; `timeout_action: PAUSE` becomes DEFER (AARM 9.3).
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from aarmor.errors import PolicyError
from aarmor.model import Classification, DecisionResult, FrozenMap, freeze
from aarmor.policy.conditions import plain
from aarmor.policy.parse import LMap, line_of

__all__ = ["Checker", "duration", "re_validation"]

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class Checker:
    """Error helper bound to one file and (optionally) one rule: every check raises `PolicyError` via `fail`."""

    def __init__(self, source: str, rule_id: str | None) -> None:
        self.source, self.rule_id = source, rule_id

    def fail(self, msg: str, line: int) -> NoReturn:
        raise PolicyError(msg, file=self.source, rule_id=self.rule_id, line=line or None)

    def strings(self, v: Any, what: str, line: int) -> tuple[str, ...]:
        items = list(v) if isinstance(v, list) else [v]
        if not items:
            self.fail(f"`{what}` is an empty list (empty means no)", line)
        if not all(isinstance(i, str) and i.strip() for i in items):
            self.fail(f"`{what}` expects a string or a list of strings, found `{plain(v)!r}`", line)
        return tuple(items)

    def number(self, v: Any, what: str, line: int, lo: float | None = None, hi: float | None = None) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.fail(f"`{what}` expects a number, found `{v!r}`", line)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(f"`{what}` must be between {lo} and {hi}, found {v}", line)
        return float(v)

    def enum(self, v: Any, cls: Any, what: str, line: int, extra: dict[str, Any] | None = None) -> Any:
        key = v.upper() if isinstance(v, str) and cls is not Classification else v
        if extra and key in extra:
            return extra[key]
        try:
            return cls(key)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            self.fail(f"unknown {what} `{v}`, expected one of {choices}", line)

    def duration(self, v: Any, what: str, line: int) -> float:
        try:
            return duration(v)
        except ValueError as exc:
            self.fail(f"`{what}`: {exc}", line)

    def keys(self, m: Any, allowed: tuple[str, ...], what: str, line: int) -> LMap:
        if not isinstance(m, LMap):
            self.fail(f"`{what}` must be a mapping, found `{plain(m)!r}`", line_of(m, line))
        for k in m:
            if k not in allowed:
                self.fail(f"unknown key `{k}` in {what}, expected one of {', '.join(allowed)}", m.key_line(k))
        return m


def duration(v: Any) -> float:
    """Seconds from a number or a string like `300`, `300s`, `30m`, `1h`, `2d`.

    Raises:
        ValueError: not a non-negative duration.
    """
    if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0:
        return float(v)
    if isinstance(v, str) and (m := _DURATION.fullmatch(v)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration (seconds, or `30s`, `5m`, `1h`), found `{v!r}`")


def re_validation(v: Checker, m: Any, line: int) -> FrozenMap:
    """`re_validation: {interval: 10_actions, method, timeout, timeout_action}` -> normalised map."""
    m = v.keys(m, ("interval", "method", "timeout", "timeout_action", "approvers"), "`re_validation`", line)
    iv = m.get("interval")
    n = None
    if isinstance(iv, int) and not isinstance(iv, bool):
        n = iv
    elif isinstance(iv, str) and re.fullmatch(r"\d+_?actions?", iv.strip()):
        n = int(re.match(r"\d+", iv.strip()).group())  # type: ignore[union-attr]
    if n is None or n < 1:
        v.fail(
            f"`re_validation.interval` must be `N_actions` with N >= 1, found `{iv!r}`",
            m.key_line("interval"),
        )
    out: dict[str, Any] = {"interval_actions": n, "method": str(m.get("method", "user_confirmation"))}
    if "timeout" in m:
        out["timeout"] = v.duration(m["timeout"], "re_validation.timeout", m.key_line("timeout"))
    ta = m.get("timeout_action", "DENY")
    out["timeout_action"] = v.enum(
        ta, DecisionResult, "timeout_action", m.key_line("timeout_action"), {"PAUSE": DecisionResult.DEFER}
    ).value
    if "approvers" in m:
        out["approvers"] = list(v.strings(m["approvers"], "approvers", m.key_line("approvers")))
    return freeze(out)  # type: ignore[no-any-return]
