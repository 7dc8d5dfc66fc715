"""`from_json` is the inverse of `to_json` for the value types read back from the store."""

from __future__ import annotations

from datetime import UTC, datetime

from aarmor.model import Action, Decision, DecisionResult, DelegationLink, Identity, RiskLevel, freeze
from aarmor.normalize import normalize_action


def test_identity_round_trip() -> None:
    ident = Identity(human="alice@company.com", service="svc", agent="agent-1", session="s1", roles=["analyst"],
                     scopes=["read", "write"], delegation=[DelegationLink(
                         "orchestrator", "sub", ("read",), datetime(2026, 1, 1, tzinfo=UTC),
                         datetime(2026, 1, 2, tzinfo=UTC))])
    back = Identity.from_json(ident.to_json())
    assert back == ident
    assert back.effective_scope == ("read",)


def test_action_round_trip() -> None:
    action = normalize_action("Payments", {"amount": 50_000, "to": ["a", {"b": 1.5}]}, operation="transfer",
                              identity=Identity(human="alice@company.com"), session_id="s1",
                              now=datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=UTC))
    back = Action.from_json(action.to_json(), parameters_digest=action.parameters_digest)
    assert back == action and back.parameters_digest == action.parameters_digest
    assert back.to_json() == action.to_json()


def test_decision_round_trip() -> None:
    d = Decision(DecisionResult.STEP_UP, "large payment", "p", "1", "sha256:x", "r1", ("r1", "r2"),
                 risk_level=RiskLevel.HIGH, confidence=0.7, modifications=freeze({"limit": 100}),
                 approvers=("finance",), timeout=60.0, escalation=freeze({"after": 30, "to": ["cfo"]}),
                 context_needed=("ticket",), effects=freeze({"data_classification": ["PII"]}), errors=("e",))
    assert Decision.from_json(d.to_json()) == d
