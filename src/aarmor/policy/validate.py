"""Stage 2: located YAML data -> validated, typed rule and header specs (the entry point).

Rules enforced by the modules behind it (DESIGN.md habits 4, 7, 10):
- Unknown keys, unknown operators, invalid or oversized regexes, wrong types (a string `priority`, an
  unknown decision) fail with `PolicyError` naming file, rule id and line.
- Empty means no: an empty rule list, allowlist, approver list or match block is an error.
- `forbidden` and `context_dependent_deny` rules must DENY; `context_dependent_defer` rules must DEFER;
  a MODIFY rule must say what it modifies; forbidden rules cannot carry a confidence `threshold`
  (AARM 2.3: context is ignored for them).
- `timeout_action: PAUSE` (re-validation) becomes DEFER (AARM 9.3).

Where each part lives:
- `specs`: the frozen `RuleSpec`, `Constraint` and `Header` records validation produces.
- `validate_fields`: the `Checker` error helper, `duration` and `re_validation`.
- `validate_header`: the `policy:` header and `intent_boundaries`.
- `validate_rules`: one rule (keys, decision, classification, blocks, constraints, `when`).
"""

from __future__ import annotations

from aarmor.policy.specs import Constraint, Header, RuleSpec
from aarmor.policy.validate_fields import Checker, duration, re_validation
from aarmor.policy.validate_header import HEADER_KEYS, validate_boundaries, validate_header
from aarmor.policy.validate_rules import validate_rule

__all__ = [
    "HEADER_KEYS",
    "Checker",
    "Constraint",
    "Header",
    "RuleSpec",
    "duration",
    "re_validation",
    "validate_boundaries",
    "validate_header",
    "validate_rule",
]
