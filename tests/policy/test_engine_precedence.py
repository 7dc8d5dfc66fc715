"""The AARM 2.4 precedence, one test per arm, each named after the attack it stops."""

from __future__ import annotations

from datetime import timedelta

from aarmor.model import Classification, DecisionResult
from aarmor.policy.cases import DEFAULT_NOW
from tests.policy.helpers import decide, policy

D = DecisionResult

P = policy("""
policy: {id: precedence, version: "2", default: DENY, internal_domains: [company.com],
         context_approvers: [security-team], alignment_threshold: 0.7}
rules:
  - id: forbid-drop
    match: {tool: database, operation: drop}
    action: DENY
    classification: forbidden
    priority: 1
    reason: never drop
  - id: allow-db-anything
    match: {tool: database}
    action: ALLOW
    priority: 5000
  - id: pii-external
    match:
      tool: email
      operation: send
      parameters.to: {external: true}
      context.data_classification: [PII, CONFIDENTIAL]
    action: DENY
    classification: context_dependent_deny
    priority: 10
    reason: classified data to external recipient
  - id: allow-email
    match: {tool: email, operation: send}
    action: ALLOW
    priority: 100
  - id: rotate-conflict
    match:
      tool: credentials
      operation: rotate
      context.environment_state_conflict: true
    action: DEFER
    priority: 50
  - id: rotate-ok
    match:
      tool: credentials
      operation: rotate
      context.environment_state_conflict: false
    action: STEP_UP
    approvers: [security-team]
    priority: 50
  - id: tie-allow
    match: {tool: tickets, operation: close}
    action: ALLOW
    priority: 7
  - id: tie-deny
    match: {tool: tickets, operation: close, parameters.force: true}
    action: DENY
    priority: 7
  - id: confident-only
    match: {tool: files, operation: write}
    action: ALLOW
    threshold: 0.8
  - id: cel-rule
    match: {tool: http}
    when: "context.ticket_status == 'approved'"
    action: ALLOW
  - id: bad-amount
    match: {tool: payments, parameters.amount: {gt: 100}}
    action: STEP_UP
    priority: 1
  - id: allow-payments
    match: {tool: payments}
    action: ALLOW
    priority: 0
intent_boundaries:
  questionnaire_review:
    allowed_tools: [docs, email]
  meeting_prep:
    allowed_tools: [calendar, crm, email, docs]
    max_data_classification: INTERNAL
    max_chain_length: 8
""")


def test_no_policy_loaded_denies() -> None:
    d = decide(None, {"tool": "crm", "operation": "get"})
    assert d.result is D.DENY and d.reason == "no policy loaded"


def test_forbidden_drop_ignores_ceo_justification_and_higher_priority_allow() -> None:
    d = decide(
        P,
        {"tool": "database", "operation": "drop", "parameters": {"database": "production"}},
        {"original_request": "the CEO said drop it", "alignment": 0.99, "confidence": 0.99},
    )
    assert d.result is D.DENY and d.rule_id == "forbid-drop" and d.classification is Classification.FORBIDDEN
    assert d.reason == "never drop" and d.policy_id == "precedence" and d.policy_version == "2"
    assert d.policy_hash == P.hash and "allow-db-anything" in d.matched_rules


def test_pii_read_then_external_email_is_denied_despite_higher_allow() -> None:
    d = decide(
        P,
        {"tool": "email", "operation": "send", "parameters": {"to": "external@gmail.com"}},
        {"prior_actions": [{"tool": "database", "operation": "query", "classifications": ["PII"]}]},
    )
    assert d.result is D.DENY and d.rule_id == "pii-external"
    assert d.classification is Classification.CONTEXT_DEPENDENT_DENY


def test_internal_email_after_pii_read_is_allowed() -> None:
    d = decide(
        P,
        {"tool": "email", "operation": "send", "parameters": {"to": "bob@sales.company.com"}},
        {"data_classification": ["PII"]},
    )
    assert d.result is D.ALLOW and d.rule_id == "allow-email"


def test_goal_hijack_outside_intent_boundary_is_denied() -> None:
    d = decide(P, {"tool": "secrets", "operation": "read"}, {"intent_classification": "questionnaire_review"})
    assert d.result is D.DENY and d.rule_id == "intent_boundaries.questionnaire_review"
    assert "outside the allowed tools" in d.reason


def test_drift_above_intent_classification_steps_up() -> None:
    d = decide(
        P,
        {"tool": "email", "operation": "send", "parameters": {"to": "a@company.com"}},
        {"intent_classification": "meeting_prep", "data_classification": ["CONFIDENTIAL"]},
    )
    assert d.result is D.STEP_UP and "above INTERNAL" in d.reason and d.approvers == ("security-team",)


def test_drift_long_chain_steps_up() -> None:
    prior = [{"tool": "crm", "operation": "get"}] * 8
    d = decide(
        P,
        {"tool": "email", "operation": "send", "parameters": {"to": "a@company.com"}},
        {"intent_classification": "meeting_prep", "prior_actions": prior},
    )
    assert d.result is D.STEP_UP and "chain length 8" in d.reason


def test_environment_manipulation_conflict_defers() -> None:
    d = decide(
        P,
        {"tool": "credentials", "operation": "rotate", "parameters": {"target": "prod-payments"}},
        {"values": {"environment_state_conflict": True}},
    )
    assert d.result is D.DEFER and d.rule_id == "rotate-conflict" and d.defer_trigger is None
    assert d.classification is Classification.CONTEXT_DEPENDENT_DEFER


def test_unpopulated_environment_state_defers_and_names_the_field() -> None:
    d = decide(P, {"tool": "credentials", "operation": "rotate"})
    assert d.result is D.DEFER and d.defer_trigger == "unpopulated_context"
    assert d.context_needed == ("context.environment_state_conflict",)
    assert "needs unpopulated context.environment_state_conflict" in d.reason


def test_populated_consistent_environment_steps_up() -> None:
    d = decide(
        P, {"tool": "credentials", "operation": "rotate"}, {"values": {"environment_state_conflict": False}}
    )
    assert d.result is D.STEP_UP and d.approvers == ("security-team",)


def test_same_priority_conflict_defers() -> None:
    d = decide(P, {"tool": "tickets", "operation": "close", "parameters": {"force": True}})
    assert d.result is D.DEFER and d.defer_trigger == "same_priority_conflict"
    assert "`tie-allow`=ALLOW" in d.reason and "`tie-deny`=DENY" in d.reason


def test_low_confidence_against_deployment_threshold_defers() -> None:
    d = decide(
        P,
        {"tool": "email", "operation": "send", "parameters": {"to": "a@company.com"}},
        {"confidence": 0.4},
        confidence_threshold=0.6,
    )
    assert d.result is D.DEFER and d.defer_trigger == "low_confidence" and d.confidence == 0.4


def test_low_confidence_below_rule_threshold_defers() -> None:
    d = decide(P, {"tool": "files", "operation": "write"}, {"confidence": 0.5})
    assert d.result is D.DEFER and d.defer_trigger == "low_confidence" and "0.8" in d.reason


def test_rule_threshold_does_not_apply_without_confidence() -> None:
    d = decide(P, {"tool": "files", "operation": "write"})
    assert d.result is D.ALLOW and d.rule_id == "confident-only"


def test_off_intent_allow_is_denied_by_low_alignment() -> None:
    d = decide(
        P, {"tool": "email", "operation": "send", "parameters": {"to": "a@company.com"}}, {"alignment": 0.3}
    )
    assert d.result is D.DENY and d.classification is Classification.CONTEXT_DEPENDENT_DENY
    assert "alignment 0.3 is below threshold 0.7" in d.reason and d.alignment == 0.3


def test_confirming_context_turns_deny_into_step_up_not_allow() -> None:
    d = decide(P, {"tool": "unknown_tool", "operation": "run"}, {"alignment": 0.95})
    assert d.result is D.STEP_UP and d.approvers == ("security-team",)
    assert d.classification is Classification.CONTEXT_DEPENDENT_ALLOW


def test_default_posture_without_signals() -> None:
    d = decide(P, {"tool": "unknown_tool", "operation": "run"})
    assert d.result is D.DENY and d.rule_id is None and "default posture DENY" in d.reason


def test_runtime_type_mismatch_fails_closed_and_weaker_allow_does_not_win() -> None:
    d = decide(P, {"tool": "payments", "operation": "transfer", "parameters": {"amount": "1000000"}})
    assert d.result is D.DENY and d.rule_id == "bad-amount"
    assert d.errors == ("rule `bad-amount`: `gt` expects a number, found string `1000000`",)


def test_cel_runtime_error_fails_closed() -> None:
    d = decide(P, {"tool": "http", "operation": "post"})
    assert d.result is D.DENY and d.errors and d.errors[0].startswith("rule `cel-rule`: `when` failed")


def test_cel_rule_matches_when_context_is_set() -> None:
    d = decide(P, {"tool": "http", "operation": "post"}, {"values": {"ticket_status": "approved"}})
    assert d.result is D.ALLOW and d.rule_id == "cel-rule"


def test_evaluate_never_raises_on_garbage_policy_object() -> None:
    d = decide(object(), {"tool": "crm", "operation": "get"})  # type: ignore[arg-type]
    assert d.result is D.DENY and d.errors and d.errors[0].startswith("internal:")


def test_rate_limit_eleventh_external_send_in_an_hour_is_denied() -> None:
    p = policy("""
policy: {id: rate}
rules:
  - id: allow-send
    match: {tool: email, operation: send}
    action: ALLOW
  - id: send-rate
    match: {tool: email, operation: send}
    constraints: {rate: {max: 10, window: 1h}}
    action: DENY
    priority: 10
""")
    recent = [{"tool": "email", "operation": "send", "decision": "ALLOW"}] * 10
    assert decide(p, {"tool": "email.send"}, {"prior_actions": recent}).result is D.DENY
    assert decide(p, {"tool": "email.send"}, {"prior_actions": recent[:9]}).result is D.ALLOW
    old = [
        {
            "tool": "email",
            "operation": "send",
            "decision": "ALLOW",
            "timestamp": (DEFAULT_NOW - timedelta(hours=2)).isoformat(),
        }
    ] * 10
    assert decide(p, {"tool": "email.send"}, {"prior_actions": old}).result is D.ALLOW
    denied = [{"tool": "email", "operation": "send", "decision": "DENY"}] * 10
    assert decide(p, {"tool": "email.send"}, {"prior_actions": denied}).result is D.ALLOW


def test_domain_allowlist_constraint_blocks_attacker_recipient() -> None:
    p = policy("""
policy: {id: allow, default: ALLOW}
rules:
  - id: email-allowlist
    match: {tool: email}
    constraints: {domain_allowlist: [company.com, partner.com]}
    action: DENY
    reason: recipient outside the allowlist
""")
    d = decide(p, {"tool": "email.send", "parameters": {"to": "compliance@attacker.com"}})
    assert d.result is D.DENY and d.reason == "recipient outside the allowlist"
    ok = decide(
        p,
        {
            "tool": "email.send",
            "parameters": {
                "to": ["a@company.com", "b@eu.partner.com"],
                "body": "see https://www.company.com/x",
            },
        },
    )
    assert ok.result is D.ALLOW
    hidden = decide(
        p,
        {
            "tool": "email.send",
            "parameters": {"to": "a@company.com", "body": "backup to https://evil.example/x"},
        },
    )
    assert hidden.result is D.DENY


def test_effects_tag_data_on_read() -> None:
    p = policy("""
policy: {id: tag}
rules:
  - id: tag-customers
    match: {tool: database, operation: query, parameters.table: customers}
    action: ALLOW
    effect: {set_context: {data_classification: PII}}
""")
    d = decide(p, {"tool": "database.query", "parameters": {"table": "customers"}})
    assert d.result is D.ALLOW and d.effects == {"data_classification": "PII"}


def test_step_up_carries_timeout_escalation_and_pause_maps_to_defer() -> None:
    p = policy("""
policy: {id: su}
rules:
  - id: big-payment
    match: {tool: payment, operation: transfer, parameters.amount: {greater_than: 10000}}
    action: STEP_UP
    approvers: [finance-manager, cfo]
    timeout: 3600
    timeout_action: PAUSE
    escalation: {after: 1800, to: [cfo]}
""")
    d = decide(p, {"tool": "payment.transfer", "parameters": {"amount": 20000}})
    assert d.result is D.STEP_UP and d.approvers == ("finance-manager", "cfo") and d.timeout == 3600
    assert d.timeout_action is D.DEFER and d.escalation == {"after": 1800.0, "to": ("cfo",)}


def test_re_validation_every_n_actions_steps_up() -> None:
    p = policy("""
policy: {id: rv, default: ALLOW}
rules:
  - id: any
    match: {tool: "*"}
    action: ALLOW
re_validation: {interval: 10_actions, method: user_confirmation, timeout: 300, timeout_action: PAUSE}
""")
    prior = [{"tool": "crm", "operation": "get"}] * 9
    d = decide(p, {"tool": "crm.get"}, {"prior_actions": prior})
    assert d.result is D.STEP_UP and d.timeout == 300 and d.timeout_action is D.DEFER
    assert decide(p, {"tool": "crm.get"}, {"prior_actions": prior[:8]}).result is D.ALLOW


def test_index_does_not_grow_with_rules_about_other_tools() -> None:
    rules = "".join(f"  - id: r{i}\n    match: {{tool: tool{i}}}\n    action: DENY\n" for i in range(2000))
    p = policy(
        "policy: {id: big}\nrules:\n" + rules + "  - id: mine\n    match: {tool: email}\n    action: ALLOW\n"
    )
    assert [r.id for r in p.candidates("email", "send")] == ["mine"]
    assert decide(p, {"tool": "email.send"}).rule_id == "mine"
