"""AARM R3: static policy + context: forbidden, context-dependent deny/allow/defer, parameter checks."""

from __future__ import annotations

from typing import Any

import pytest

from aarmor import ActionDenied, DecisionResult
from aarmor.intent import AlignmentSignal
from aarmor.model import Action, ContextSnapshot
from tests.conformance.conftest import POLICY, Tool

D = DecisionResult


class FixedScorer:
    """Stands in for the embedding model (a later issue; no model runs in this one): it reports a
    fixed alignment so the PDP's alignment overrides can be exercised through the real pipeline."""

    name = "fixed"

    def __init__(self, alignment: float, confidence: float | None = None) -> None:
        self.signal = AlignmentSignal(alignment=alignment, semantic_distance=1 - alignment, confidence=confidence)

    def score(self, action: Action, snapshot: ContextSnapshot) -> AlignmentSignal:
        return self.signal


def test_forbidden_action_denied_whatever_the_context(make_guard: Any, alice: Any) -> None:
    guard = make_guard(policy=str(POLICY), scorer=FixedScorer(1.0, confidence=1.0))
    with guard.session(identity=alice, original_request="The CEO said drop it. Drop the production database.") as s:
        d = s.evaluate("database.drop", {"database": "production"})
    assert d.result is D.DENY
    assert d.rule_id == "forbid-drop-production"
    assert d.classification.value == "forbidden"


def test_allowed_action_after_sensitive_read_is_denied(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice, original_request="email the customer list summary") as s:
        assert s.evaluate("email.send", {"to": "someone@gmail.com"}).result is D.ALLOW  # before any read
        s.invoke("database.query", {"sql": "SELECT * FROM customers", "limit": 10},
                 Tool([{"name": "Jane", "email": "jane@example.org"}]))
        with pytest.raises(ActionDenied) as info:
            s.invoke("email.send", {"to": "someone@gmail.com"}, Tool())
    assert info.value.decision.rule_id == "pii-then-external"
    assert info.value.decision.classification.value == "context_dependent_deny"


def test_denied_action_with_confirming_context_steps_up(make_guard: Any, alice: Any) -> None:
    aligned = make_guard(policy=str(POLICY), scorer=FixedScorer(0.95))
    with aligned.session(identity=alice, original_request="clean up the test data I created yesterday") as s:
        d = s.evaluate("database.delete", {"table": "test_records", "where": "created_by=user123"})
    assert d.result is D.STEP_UP  # not a silent ALLOW
    assert "security-team" in d.approvers
    unaligned = make_guard(policy=str(POLICY), scorer=FixedScorer(0.1))
    with unaligned.session(identity=alice, original_request="summarise the report") as s:
        assert s.evaluate("database.delete", {"table": "test_records"}).result is D.DENY


def test_conflicting_context_defers(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice, original_request="rotate the payment credentials") as s:
        unknown = s.evaluate("credentials.rotate", {"target": "prod-payments"})
        s.set_context("environment_state_conflict", True, source="monitor")
        conflicting = s.evaluate("credentials.rotate", {"target": "prod-payments"})
    assert unknown.result is D.DEFER and unknown.defer_trigger == "unpopulated_context"
    assert "context.environment_state_conflict" in unknown.context_needed
    assert conflicting.result is D.DEFER and conflicting.rule_id == "defer-rotation-on-conflict"


def test_parameter_validation_by_range(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice) as s:
        assert s.evaluate("payment.transfer", {"amount": 50}).result is D.ALLOW
        assert s.evaluate("payment.transfer", {"amount": 50_000}).result is D.STEP_UP
