"""Shared helpers: build a decision from a case-shaped dict, the same shape as CASES files."""

from __future__ import annotations

from typing import Any

from aarmor.model import Decision
from aarmor.policy import PolicySet, evaluate, load_policy_text
from aarmor.policy.cases import case_action, case_snapshot, parse_case


def decide(
    policy: PolicySet | None, action: dict[str, Any], context: dict[str, Any] | None = None, **kw: Any
) -> Decision:
    case = parse_case({"action": action, "context": context or {}})
    return evaluate(case_action(case), case_snapshot(case), policy, now=case.now, **kw)


def policy(text: str, **kw: Any) -> PolicySet:
    return load_policy_text(text, source="policy.yaml", **kw)
