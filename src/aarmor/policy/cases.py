"""Policy test cases (`aarmor policy test FILE CASES.yaml`): load, build actions and snapshots, run.

The CASES format is in docs/internal/contracts.md. Prior actions are listed oldest first; a prior action
without a timestamp gets `now - (n - i)` seconds (so they are ordered and all before `now`). The session's
classifications are the union of the prior actions' and `context.data_classification`; its maximum
sensitivity is the highest level label among them (PUBLIC < INTERNAL < CONFIDENTIAL < RESTRICTED).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aarmor.canonical import parse_ts
from aarmor.errors import InputError, PolicyError
from aarmor.model import (
    Action,
    ContextSnapshot,
    Decision,
    DecisionResult,
    Identity,
    PriorAction,
    freeze,
    thaw,
)
from aarmor.normalize import normalize_action, normalize_name, split_tool
from aarmor.policy.compile import PolicySet
from aarmor.policy.conditions import plain
from aarmor.policy.engine import evaluate
from aarmor.policy.operators import LEVELS
from aarmor.policy.parse import LMap, parse_yaml

__all__ = [
    "DEFAULT_NOW",
    "Case",
    "CaseReport",
    "CaseResult",
    "case_action",
    "case_snapshot",
    "load_cases",
    "parse_case",
    "run_cases",
]

DEFAULT_NOW = datetime(2026, 2, 10, 12, 0, 0, tzinfo=UTC)
_CASE_KEYS = {"name", "now", "action", "context", "expect", "confidence_threshold"}
_ACTION_KEYS = {"tool", "operation", "parameters", "identity", "session_id", "action_id"}
_CONTEXT_KEYS = {
    "original_request",
    "intent_classification",
    "prior_actions",
    "data_classification",
    "values",
    "risk_signals",
    "alignment",
    "semantic_distance",
    "confidence",
    "elapsed_seconds",
    "action_count",
    "max_sensitivity",
    "session_id",
}
_IDENTITY_KEYS = {"human", "service", "agent", "session", "roles", "role", "scopes", "scope"}
_PRIOR_KEYS = {
    "tool",
    "operation",
    "decision",
    "timestamp",
    "classifications",
    "action_id",
    "executed",
    "success",
}
_EXPECT_KEYS = {
    "result",
    "decision",
    "rule_id",
    "defer_trigger",
    "modifications",
    "context_needed",
    "approvers",
    "classification",
    "reason_contains",
    "errors",
}


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    now: datetime
    action: dict[str, Any]
    context: dict[str, Any]
    expect: dict[str, Any]
    confidence_threshold: float = 0.0
    line: int = 0


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    decision: Decision
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


@dataclass(frozen=True, slots=True)
class CaseReport:
    results: tuple[CaseResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)


def _check_keys(m: Any, allowed: set[str], what: str, source: str, line: int) -> dict[str, Any]:
    if not isinstance(m, Mapping):
        raise PolicyError(f"{what} must be a mapping", file=source, line=line or None)
    extra = sorted(set(m) - allowed)
    if extra:
        ln = m.key_line(extra[0]) if isinstance(m, LMap) else line
        raise PolicyError(
            f"unknown key `{extra[0]}` in {what}, expected one of {', '.join(sorted(allowed))}",
            file=source,
            line=ln or None,
        )
    return plain(m)  # type: ignore[no-any-return]


def parse_case(raw: Any, *, source: str = "<case>", index: int = 0) -> Case:
    """Validate one case mapping (also the shape of `aarmor policy explain`'s ACTION.json).

    Raises:
        PolicyError: unknown keys, a missing action or expectation, a bad timestamp.
    """
    line = getattr(raw, "line", 0)
    m = _check_keys(raw, _CASE_KEYS, f"case #{index + 1}", source, line)
    if "action" not in m:
        raise PolicyError(f"case #{index + 1} has no `action`", file=source, line=line or None)
    action = _check_keys(raw["action"], _ACTION_KEYS, "`action`", source, line)
    context = _check_keys(raw.get("context") or {}, _CONTEXT_KEYS, "`context`", source, line)
    expect = _check_keys(raw.get("expect") or {}, _EXPECT_KEYS, "`expect`", source, line)
    try:
        now = parse_ts(m["now"]) if isinstance(m.get("now"), str) else m.get("now") or DEFAULT_NOW
    except ValueError as exc:
        raise PolicyError(f"case #{index + 1}: bad `now`: {exc}", file=source, line=line or None) from exc
    if isinstance(now, datetime) and now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return Case(
        str(m.get("name", f"case {index + 1}")),
        now,
        action,
        context,
        expect,
        float(m.get("confidence_threshold", 0.0)),
        line,
    )


def load_cases(path: str | Path) -> list[Case]:
    """Load a CASES.yaml file.

    Raises:
        PolicyError: unreadable file, YAML errors, or malformed cases (naming file and line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read cases: {exc.strerror or exc}", file=str(p)) from exc
    doc = parse_yaml(text, source=p.name)
    cases = doc.get("cases") if isinstance(doc, Mapping) else doc
    if not isinstance(cases, list) or not cases:
        raise PolicyError("a cases file needs a non-empty `cases:` list", file=p.name)
    out = [parse_case(c, source=p.name, index=i) for i, c in enumerate(cases)]
    for c in out:
        if "result" not in c.expect and "decision" not in c.expect:
            raise PolicyError(f"case `{c.name}` has no `expect.result`", file=p.name, line=c.line or None)
    return out


def _ts(v: Any, default: datetime) -> datetime:
    if v is None:
        return default
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    return parse_ts(str(v))


def case_action(case: Case) -> Action:
    """The normalised `Action` of a case (`tool: email.send` with no operation splits at the last dot).

    Raises:
        InputError: a name or argument that cannot be normalised.
    """
    a = case.action
    ident = dict(a.get("identity") or {})
    extra = set(ident) - _IDENTITY_KEYS
    if extra:
        raise InputError(f"unknown identity key `{sorted(extra)[0]}`")
    roles = ident.get("roles", ident.get("role", ()))
    scopes = ident.get("scopes", ident.get("scope", ()))
    identity = Identity(
        human=ident.get("human"),
        service=ident.get("service"),
        agent=ident.get("agent"),
        session=ident.get("session"),
        roles=[roles] if isinstance(roles, str) else roles,
        scopes=[scopes] if isinstance(scopes, str) else scopes,
    )
    return normalize_action(
        str(a.get("tool", "")),
        a.get("parameters") or {},
        operation=a.get("operation"),
        identity=identity,
        session_id=str(a.get("session_id", "sess_case")),
        now=case.now,
        action_id=str(a.get("action_id", "act_case")),
    )


def case_snapshot(case: Case) -> ContextSnapshot:
    """The `ContextSnapshot` of a case (see the module docstring for defaults)."""
    c, now = case.context, case.now
    raw_prior = c.get("prior_actions") or []
    prior = []
    for i, p in enumerate(raw_prior):
        if isinstance(p, str):
            p = {"tool": p}
        if set(p) - _PRIOR_KEYS:
            raise InputError(f"unknown prior action key `{sorted(set(p) - _PRIOR_KEYS)[0]}`")
        tool, op = split_tool(str(p["tool"]), p.get("operation"))
        prior.append(
            PriorAction(
                action_id=str(p.get("action_id", f"act_prior_{i}")),
                tool=normalize_name(tool),
                operation=normalize_name(op, what="operation") if op else "",
                decision=DecisionResult(str(p.get("decision", "ALLOW")).upper()),
                timestamp=_ts(p.get("timestamp"), now - timedelta(seconds=len(raw_prior) - i)),
                executed=bool(p.get("executed", True)),
                success=p.get("success"),
                classifications=frozenset(_labels(p.get("classifications"))),
            )
        )
    labels = set(_labels(c.get("data_classification")))
    for p in prior:
        labels |= p.classifications
    ranked = [lv for lv in labels if lv.upper() in LEVELS]
    max_s = c.get("max_sensitivity") or (max(ranked, key=lambda lv: LEVELS[lv.upper()]) if ranked else None)
    elapsed = float(c.get("elapsed_seconds", 0.0))
    return ContextSnapshot(
        session_id=str(c.get("session_id", "sess_case")),
        started_at=now - timedelta(seconds=elapsed),
        original_request=c.get("original_request"),
        intent_classification=c.get("intent_classification"),
        prior_actions=tuple(prior),
        classifications=frozenset(labels),
        max_sensitivity=max_s,
        action_count=int(c.get("action_count", len(prior))),
        elapsed_seconds=elapsed,
        values=freeze(c.get("values") or {}),
        risk_signals=freeze(c.get("risk_signals") or {}),
        alignment=c.get("alignment"),
        semantic_distance=c.get("semantic_distance"),
        confidence=c.get("confidence"),
    )


def _labels(v: Any) -> list[str]:
    if v is None:
        return []
    return [str(v)] if isinstance(v, str) else [str(x) for x in v]


def check(case: Case, d: Decision) -> tuple[str, ...]:
    """Mismatches between a case's `expect` and a decision (empty when it passes)."""
    e, out = case.expect, []
    want = str(e.get("result", e.get("decision", ""))).upper()
    if d.result.value != want:
        out.append(f"result: expected {want}, got {d.result.value}")
    for k in ("rule_id", "defer_trigger", "classification"):
        if k in e and str(e[k]) != str(getattr(d, k)):
            out.append(f"{k}: expected {e[k]}, got {getattr(d, k)}")
    if "modifications" in e:
        got = thaw(d.modifications) if d.modifications is not None else None
        want_m = dict(e["modifications"] or {})
        if "params" in want_m:
            want_m["parameters"] = want_m.pop("params")
        if got != (want_m or None):
            out.append(f"modifications: expected {want_m}, got {got}")
    for k in ("context_needed", "approvers"):
        if k in e and list(e[k]) != list(getattr(d, k)):
            out.append(f"{k}: expected {list(e[k])}, got {list(getattr(d, k))}")
    if "reason_contains" in e and str(e["reason_contains"]).casefold() not in d.reason.casefold():
        out.append(f"reason: expected to contain `{e['reason_contains']}`, got `{d.reason}`")
    if "errors" in e and bool(e["errors"]) != bool(d.errors):
        out.append(f"errors: expected {'some' if e['errors'] else 'none'}, got {list(d.errors)}")
    return tuple(out)


def run_cases(policy: PolicySet, cases: list[Case]) -> CaseReport:
    """Evaluate every case; a case whose action cannot even be built fails with that error."""
    results = []
    for case in cases:
        try:
            d = evaluate(
                case_action(case),
                case_snapshot(case),
                policy,
                now=case.now,
                confidence_threshold=case.confidence_threshold,
            )
        except (InputError, ValueError, KeyError, TypeError) as exc:
            d = Decision(DecisionResult.DENY, f"case could not be built: {exc}", errors=(str(exc),))
            results.append(CaseResult(case, d, (f"bad case: {exc}",)))
            continue
        results.append(CaseResult(case, d, check(case, d)))
    return CaseReport(tuple(results))
