"""Explain a decision: every candidate rule with each condition's outcome (`aarmor policy explain`).

Unlike the PDP, which stops at the first false condition, this evaluates every condition of every
candidate rule so a policy author sees why each rule did or did not match. Rules about other tools are
summarised by count. Not used on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aarmor.model import Action, ContextSnapshot, Decision
from aarmor.policy.compile import CompiledRule, PolicySet
from aarmor.policy.conditions import FALSE, TRUE
from aarmor.policy.engine import evaluate
from aarmor.policy.facts import Facts
from aarmor.policy.operators import EvalError

__all__ = ["Explanation", "RuleTrace", "explain"]

_WORD = {TRUE: "true", FALSE: "false"}


@dataclass(frozen=True, slots=True)
class RuleTrace:
    rule_id: str
    decision: str
    priority: int
    classification: str
    outcome: str  # match / no_match / unpopulated / error / low_confidence
    conditions: tuple[tuple[str, str], ...]  # (description, true|false|unpopulated|error: ...)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "decision": self.decision,
            "priority": self.priority,
            "classification": self.classification,
            "outcome": self.outcome,
            "conditions": [{"condition": c, "outcome": o} for c, o in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    rules: tuple[RuleTrace, ...]
    other_rules: int

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision.to_json(),
            "candidates": [r.to_json() for r in self.rules],
            "rules_about_other_tools": self.other_rules,
        }


def _trace(rule: CompiledRule, facts: Facts) -> RuleTrace:
    s = rule.spec
    rows: list[tuple[str, str]] = []
    target = []
    if s.tools:
        target.append("tool in " + ", ".join(s.tools))
    if s.operations:
        target.append("operation in " + ", ".join(s.operations))
    rows.append(("; ".join(target) or "any tool", "true"))
    for c in s.conditions:
        try:
            r = c.eval(facts)
            rows.append((c.describe(), _WORD.get(r, "unpopulated")))
        except EvalError as exc:
            rows.append((c.describe(), f"error: {exc}"))
    for k in s.constraints:
        try:
            rows.append(
                (f"constraint {k.to_json()} violated", "true" if rule.violated(k, facts) else "false")
            )
        except EvalError as exc:
            rows.append((f"constraint {k.to_json()} violated", f"error: {exc}"))
    if rule.program is not None:
        try:
            rows.append((f"when: {s.when}", str(rule.program.execute(facts.cel_activation())).lower()))
        except Exception as exc:
            rows.append((f"when: {s.when}", f"error: {type(exc).__name__}: {exc}"))
    if s.threshold is not None:
        conf = facts.snapshot.confidence
        rows.append(
            (
                f"confidence >= {s.threshold:g}",
                "not applicable (no confidence)" if conf is None else str(conf >= s.threshold).lower(),
            )
        )
    outcome, _ = rule.evaluate(facts)
    return RuleTrace(s.id, s.decision.value, s.priority, s.classification.value, outcome, tuple(rows))


def explain(
    action: Action,
    snapshot: ContextSnapshot,
    policy: PolicySet,
    *,
    now: datetime,
    confidence_threshold: float = 0.0,
) -> Explanation:
    """The decision plus a per-rule, per-condition trace of the candidate rules."""
    decision = evaluate(action, snapshot, policy, now=now, confidence_threshold=confidence_threshold)
    facts = Facts(action, snapshot, now)
    cands = policy.candidates(action.tool, action.operation)
    return Explanation(decision, tuple(_trace(r, facts) for r in cands), len(policy.rules) - len(cands))
