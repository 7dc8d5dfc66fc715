"""AARM 2.3 canonical examples as direct PDP calls (AARM.md section 2.3, "usable as tests").

Each test builds the action with `normalize_action` and the session with a `ContextSnapshot`, exactly as
the pipeline hands them to the PDP, evaluates them against `tests/policies/aarm/canonical_2_3.yaml` and
asserts the result AND the deciding rule and reason, then the near miss that must not fire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aarmor.model import (
    Action,
    Classification,
    ContextSnapshot,
    Decision,
    DecisionResult,
    FrozenMap,
    Identity,
    PriorAction,
    freeze,
)
from aarmor.normalize import normalize_action
from aarmor.policy import PolicySet, evaluate, load_policy

POLICY_PATH = Path(__file__).parents[1] / "policies" / "aarm" / "canonical_2_3.yaml"
NOW = datetime(2026, 2, 10, 12, 0, 0, tzinfo=UTC)
SESSION = "sess_canonical"
ALICE = Identity(human="alice@company.com", service="agent-svc", agent="a1", session=SESSION,
                 roles=("analyst",), scopes=("db:admin",))


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    return load_policy(POLICY_PATH)


def _action(tool: str, operation: str, params: Mapping[str, Any], identity: Identity = ALICE) -> Action:
    return normalize_action(tool, dict(params), operation=operation, identity=identity, session_id=SESSION,
                            now=NOW)


def _prior(tool: str, operation: str, labels: Sequence[str] = (), seconds_ago: int = 30) -> PriorAction:
    return PriorAction(action_id=f"act_{tool}_{operation}_{seconds_ago}", tool=tool, operation=operation,
                       decision=DecisionResult.ALLOW, timestamp=NOW - timedelta(seconds=seconds_ago),
                       executed=True, success=True, classifications=frozenset(labels))


def _snapshot(*, original_request: str | None = None, prior: Sequence[PriorAction] = (),
              values: Mapping[str, Any] | None = None, alignment: float | None = None,
              confidence: float | None = None) -> ContextSnapshot:
    labels: frozenset[str] = frozenset().union(*(p.classifications for p in prior)) if prior else frozenset()
    return ContextSnapshot(
        session_id=SESSION, started_at=NOW - timedelta(minutes=5), original_request=original_request,
        prior_actions=tuple(prior), classifications=labels, action_count=len(prior), elapsed_seconds=300.0,
        values=freeze(dict(values or {})), risk_signals=FrozenMap(), alignment=alignment,
        confidence=confidence,
    )


def _explain(d: Decision) -> str:
    return (f"got {d.result.value} rule_id={d.rule_id!r} reason={d.reason!r} trigger={d.defer_trigger!r} "
            f"matched={d.matched_rules!r} errors={d.errors!r}")


def _decide(policy: PolicySet, action: Action, snapshot: ContextSnapshot, **kw: Any) -> Decision:
    d = evaluate(action, snapshot, policy, now=NOW, **kw)
    assert d.errors == (), _explain(d)
    assert d.policy_id == "aarm-2-3-canonical" and d.policy_hash == policy.hash, _explain(d)
    return d


# --- forbidden ------------------------------------------------------------------------------------------

def test_forbidden_drop_production_denied_even_when_the_ceo_said_so(policy: PolicySet) -> None:
    """AARM 2.3: database.drop(database="production") with "the CEO said drop it" still gives DENY."""
    action = _action("database", "drop", {"database": "production"})
    snap = _snapshot(original_request="the CEO said drop it", alignment=0.99, confidence=0.99)
    d = _decide(policy, action, snap)
    assert d.result is DecisionResult.DENY, _explain(d)
    assert d.rule_id == "forbid-drop-production", _explain(d)
    assert d.reason == "Dropping the production database is forbidden", _explain(d)
    assert d.classification is Classification.FORBIDDEN, _explain(d)


def test_forbidden_beats_a_higher_priority_allow(policy: PolicySet) -> None:
    """AARM 2.4 step 1: forbidden is decided before static resolution, whatever the priorities."""
    dba = Identity(human="dora@company.com", service="agent-svc", agent="a1", session=SESSION, roles=("dba",))
    d = _decide(policy, _action("database", "drop", {"database": "production"}, dba),
                _snapshot(original_request="the CEO said drop it", alignment=0.99))
    assert d.result is DecisionResult.DENY, _explain(d)
    assert d.rule_id == "forbid-drop-production", _explain(d)


def test_non_forbidden_drop_goes_to_its_owner(policy: PolicySet) -> None:
    d = _decide(policy, _action("database", "drop", {"database": "scratch_alice"}), _snapshot())
    assert d.result is DecisionResult.STEP_UP, _explain(d)
    assert d.rule_id == "approve-other-drops", _explain(d)
    assert d.approvers == ("database-owner",), _explain(d)


# --- context-dependent deny -----------------------------------------------------------------------------

def test_pii_query_then_external_email_denied(policy: PolicySet) -> None:
    """AARM 2.3: database.query("SELECT * FROM customers") (PII) then email.send(external) gives DENY."""
    query = _action("database", "query", {"query": "SELECT * FROM customers"})
    d0 = _decide(policy, query, _snapshot(original_request="send the customer list to my personal address"))
    assert d0.result is DecisionResult.ALLOW and d0.rule_id == "allow-queries", _explain(d0)

    send = _action("email", "send", {"to": "external@gmail.com", "subject": "customers"})
    snap = _snapshot(original_request="send the customer list to my personal address",
                     prior=[_prior("database", "query", ["PII"])])
    d = _decide(policy, send, snap)
    assert d.result is DecisionResult.DENY, _explain(d)
    assert d.rule_id == "deny-external-after-pii", _explain(d)
    assert d.reason == "PII was read in this session; external recipients are blocked", _explain(d)
    assert d.classification is Classification.CONTEXT_DEPENDENT_DENY, _explain(d)


def test_external_email_without_the_pii_read_is_the_baseline_allow(policy: PolicySet) -> None:
    send = _action("email", "send", {"to": "external@gmail.com", "subject": "hello"})
    d = _decide(policy, send, _snapshot(prior=[_prior("calendar", "read", ["INTERNAL"])]))
    assert d.result is DecisionResult.ALLOW, _explain(d)
    assert d.rule_id == "allow-email", _explain(d)


# --- context-dependent allow ----------------------------------------------------------------------------

def test_delete_own_test_records_with_confirming_request_steps_up(policy: PolicySet) -> None:
    """AARM 2.3: "clean up the test data I created yesterday", then database.delete(table="test_records",
    where="created_by=user123") on records the user owns gives STEP_UP (baseline DENY + alignment >= tau,
    AARM 2.4 step 6, routed to the policy's context approvers, not a silent ALLOW)."""
    user = Identity(human="user123@company.com", service="agent-svc", agent="a1", session=SESSION,
                    roles=("analyst",), scopes=("db:write",))
    action = _action("database", "delete", {"table": "test_records", "where": "created_by=user123"}, user)
    snap = _snapshot(original_request="clean up the test data I created yesterday", alignment=0.92,
                     prior=[_prior("database", "query", ["INTERNAL"])])
    d = _decide(policy, action, snap)
    assert d.result is DecisionResult.STEP_UP, _explain(d)
    assert d.rule_id == "deny-deletes-baseline", _explain(d)
    assert "alignment" in d.reason, _explain(d)
    assert d.approvers == ("data-owner",), _explain(d)
    assert d.classification is Classification.CONTEXT_DEPENDENT_ALLOW, _explain(d)


def test_delete_under_an_unrelated_request_stays_denied(policy: PolicySet) -> None:
    action = _action("database", "delete", {"table": "test_records", "where": "created_by=user123"})
    d = _decide(policy, action, _snapshot(original_request="summarise last quarter's sales", alignment=0.15))
    assert d.result is DecisionResult.DENY, _explain(d)
    assert d.rule_id == "deny-deletes-baseline", _explain(d)


# --- context-dependent defer ----------------------------------------------------------------------------

def test_credentials_rotate_with_conflicting_environment_defers(policy: PolicySet) -> None:
    """AARM 2.3: credentials.rotate(target="prod-payments") where the change ticket says the window is
    approved but the monitor says production is frozen gives DEFER."""
    action = _action("credentials", "rotate", {"target": "prod-payments"})
    snap = _snapshot(original_request="rotate the payments credentials per CHG-1234",
                     values={"change_window": "approved", "production_state": "frozen"})
    d = _decide(policy, action, snap)
    assert d.result is DecisionResult.DEFER, _explain(d)
    assert d.rule_id == "defer-conflicting-environment", _explain(d)
    assert "Change ticket and production monitor disagree" in d.reason, _explain(d)
    assert d.timeout == 600 and d.timeout_action is DecisionResult.DENY, _explain(d)


def test_credentials_rotate_with_agreeing_environment_is_allowed(policy: PolicySet) -> None:
    action = _action("credentials", "rotate", {"target": "prod-payments"})
    snap = _snapshot(values={"change_window": "approved", "production_state": "normal"})
    d = _decide(policy, action, snap)
    assert d.result is DecisionResult.ALLOW, _explain(d)
    assert d.rule_id == "allow-rotation", _explain(d)


def test_credentials_rotate_before_the_monitor_reports_defers_for_context(policy: PolicySet) -> None:
    """AARM R3 (a): the deciding rule references `context.production_state`, not yet populated."""
    action = _action("credentials", "rotate", {"target": "prod-payments"})
    d = _decide(policy, action, _snapshot(values={"change_window": "approved"}))
    assert d.result is DecisionResult.DEFER, _explain(d)
    assert d.defer_trigger == "unpopulated_context", _explain(d)
    assert any("production_state" in c for c in d.context_needed), _explain(d)


def test_deployment_confidence_threshold_defers(policy: PolicySet) -> None:
    """AARM R3 (c): a confidence below the deployment threshold gives DEFER, never the baseline."""
    send = _action("email", "send", {"to": "bob@company.com", "subject": "hello"})
    d = _decide(policy, send, _snapshot(confidence=0.3), confidence_threshold=0.8)
    assert d.result is DecisionResult.DEFER, _explain(d)
    assert d.defer_trigger == "low_confidence", _explain(d)
