"""The typed specs that validation produces: frozen, slotted rule, constraint and header records.

Rules this module enforces (DESIGN.md habit 8):
- Validated policy data travels as these frozen dataclasses, never as `dict[str, Any]`.
- `RuleSpec.to_json` is the canonical normalised form hashed into the policy hash: tools, operations and
  conditions are sorted so that reordering a policy does not change its hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aarmor.model import Classification, DecisionResult, FrozenMap, RiskLevel
from aarmor.policy.conditions import Condition, plain

__all__ = ["Constraint", "Header", "RuleSpec"]


@dataclass(frozen=True, slots=True)
class Constraint:
    """`constraints:` entry; the rule fires when the constraint is VIOLATED (AARM 9.2)."""

    kind: str  # "domain_allowlist" | "rate" | "volume"
    domains: tuple[str, ...] = ()
    max: int = 0  # actions (rate) or bytes (volume)
    window: float = 0.0

    def to_json(self) -> Any:
        if self.kind == "rate":
            return {"rate": {"max": self.max, "window": self.window}}
        if self.kind == "volume":
            return {"volume": {"max_bytes": self.max, "window": self.window}}
        return {"domain_allowlist": list(self.domains)}


@dataclass(frozen=True, slots=True)
class Sequence:
    """`after:` - the rule applies only if one of the session's last `within` actions (and, with `window`,
    within that many seconds) executed and matches these tool/operation patterns and output labels."""

    tools: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    within: int = 10
    window: float | None = None

    def to_json(self) -> Any:
        return {"tools": sorted(self.tools), "operations": sorted(self.operations), "labels": sorted(self.labels),
                "within": self.within, "window": self.window}


@dataclass(frozen=True, slots=True)
class RuleSpec:
    id: str
    name: str
    description: str
    decision: DecisionResult
    priority: int
    classification: Classification
    reason: str
    risk_level: RiskLevel | None
    threshold: float | None
    approvers: tuple[str, ...]
    timeout: float | None
    timeout_action: DecisionResult
    escalation: FrozenMap | None
    modifications: FrozenMap | None
    effects: FrozenMap | None
    context_needed: tuple[str, ...]
    tools: tuple[str, ...]  # empty: every tool
    operations: tuple[str, ...]  # empty: every operation
    conditions: tuple[Condition, ...]
    constraints: tuple[Constraint, ...]
    when: str | None
    when_line: int
    re_validation: FrozenMap | None
    source: str
    line: int
    after: Sequence | None = None

    def to_json(self) -> dict[str, Any]:
        """The canonical normalised form (hashed into the policy hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "decision": self.decision.value,
            "priority": self.priority,
            "classification": self.classification.value,
            "reason": self.reason,
            "risk_level": self.risk_level.value if self.risk_level else None,
            "threshold": self.threshold,
            "approvers": list(self.approvers),
            "timeout": self.timeout,
            "timeout_action": self.timeout_action.value,
            "escalation": plain(self.escalation),
            "modifications": plain(self.modifications),
            "effects": plain(self.effects),
            "context_needed": list(self.context_needed),
            "tools": sorted(self.tools),
            "operations": sorted(self.operations),
            "conditions": sorted((c.to_json() for c in self.conditions), key=repr),
            "constraints": [c.to_json() for c in self.constraints],
            "when": self.when,
            "re_validation": plain(self.re_validation),
            # only when set, so the hash of every policy without `after` is what it was
            **({"after": self.after.to_json()} if self.after is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class Header:
    policy_id: str
    version: str
    description: str
    default: DecisionResult
    default_given: bool
    internal_domains: tuple[str, ...]
    alignment_threshold: float | None
    context_approvers: tuple[str, ...]
    confidence_threshold: float
    #: AARM 2.4 step 2: a session risk above this is DENY (None: no compositional threshold)
    risk_threshold: float | None = None
