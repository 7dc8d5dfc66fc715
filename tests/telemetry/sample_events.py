"""Realistic telemetry events of every type, projected (`events.project`) from context log entries shaped
as the mediator writes them, plus the process-level ones (`system_event`).

`HOSTILE` is text a tool name, a reason or an identity could carry into a SIEM line: CEF separators, JSON
and shell metacharacters, line breaks of every kind, non-BMP unicode.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aarmor.store.records import LogRecord, ReceiptRecord
from aarmor.telemetry.events import EVENT_TYPES, TelemetryEvent, project, system_event

HOSTILE = 'a|b=c\\d\ne\rf\\|g=\\=h "quoted" <x> %n ☃ 𝄞 \u2028end'
SESSION = "ses_7f3a"
_seq = 0


def _rec(kind: str, body: dict[str, Any], session: str = SESSION) -> LogRecord:
    global _seq
    _seq += 1
    h = hashlib.sha256(f"{kind}{_seq}{body}".encode()).hexdigest()
    return LogRecord(session, _seq, kind, body, "2026-11-29T10:00:00.123Z", "0" * 64, h)


def _identity(human: str = "alice@example.com") -> dict[str, Any]:
    return {"human": human, "service": "support-bot", "agent": "agent-7", "verified_by": "oidc:https://idp.example",
            "roles": ["support"], "effective_scope": ["email:send", "crm:read"]}


def _requested(action_id: str, result: str, *, tool: str = "email", operation: str = "send",
               reason: str = "rule matched", risk: str = "MEDIUM", alerts: list[str] | None = None,
               human: str = "alice@example.com") -> LogRecord:
    body: dict[str, Any] = {
        "action": {"action_id": action_id, "timestamp": "2026-11-29T10:00:00.100Z", "tool": tool,
                   "operation": operation, "session_id": SESSION, "identity": _identity(human),
                   "parameters": {"to": "bob@example.com", "body": "secret body text"},
                   "parameters_digest": "sha256:" + "ab" * 32},
        "decision": {"result": result, "reason": reason, "rule_id": f"rule-{result.lower()}",
                     "policy": {"policy_id": "support-policy", "version": "3", "hash": "sha256:" + "cd" * 32},
                     "matched_rules": [f"rule-{result.lower()}"], "classification": "context_dependent_allow",
                     "risk_level": risk, "confidence": 0.9, "alignment": None, "modifications": None,
                     "approvers": [], "timeout": None, "timeout_action": "DENY", "escalation": None}}
    if alerts:
        body["alerts"] = alerts
    return _rec("action_requested", body)


def _outcome(action_id: str, success: bool, *, injection: list[str] | None = None, error: str | None = None
             ) -> LogRecord:
    body: dict[str, Any] = {"action_id": action_id, "tool": "email", "operation": "send", "executed": True,
                            "success": success, "output_digest": "sha256:" + "ef" * 32, "output_form": "text",
                            "output_bytes": 10, "scanned_bytes": 10, "classifications": ["pii"], "level": "pii",
                            "detectors": [], "declared": None, "unclassified": False,
                            "error": {"class": error, "message": "private detail"} if error else None}
    if injection:
        body["injection"] = injection
    return _rec("action_outcome", body)


def _observed(rec: LogRecord) -> LogRecord:
    return LogRecord(rec.session_id, rec.seq, rec.kind, {**rec.body, "enforcement": "observed"}, rec.recorded_at,
                     rec.prev_hash, rec.entry_hash)


def _receipt(action_id: str) -> ReceiptRecord:
    return ReceiptRecord(f"rcpt_{action_id}", SESSION, 1, action_id, "2026-11-29T10:00:00.200Z", "email", "send",
                         "ALLOW", "support-policy", "alice@example.com", "0" * 64, {})


def sample_events(*, export_parameters: frozenset[str] = frozenset({"to"})) -> list[TelemetryEvent]:
    """At least one event of every type; every decision result; alerts; hostile text in one of each kind.
    The same call gives the same events (ids included)."""
    global _seq
    _seq = 0
    logs = [
        _requested("act_allow", "ALLOW", risk="LOW"), _outcome("act_allow", True),
        _requested("act_fail", "ALLOW"), _outcome("act_fail", False, error="TimeoutError"),
        _requested("act_deny", "DENY", reason="external recipient with pii", risk="HIGH"),
        _requested("act_modify", "MODIFY", reason="recipient list trimmed"), _outcome("act_modify", True),
        _requested("act_stepup", "STEP_UP", reason="needs a manager"),
        _rec("approval_requested", {"action_id": "act_stepup", "tool": "email", "operation": "send",
                                    "request_id": "apr_1", "approvers": ["manager@example.com"], "timeout": 300}),
        _rec("approval_decided", {"action_id": "act_stepup", "tool": "email", "operation": "send",
                                  "request_id": "apr_1", "approver": "manager@example.com", "granted": True,
                                  "reason": "ok for this customer"}),
        _rec("approval_decided", {"action_id": "act_rejected", "tool": "email", "operation": "send",
                                  "request_id": "apr_2", "approver": "manager@example.com", "granted": False,
                                  "reason": "no"}),
        _requested("act_defer", "DEFER", reason="ticket status unknown"),
        _rec("deferral_created", {"action_id": "act_defer", "tool": "email", "operation": "send",
                                  "deferral_id": "dfr_1", "reason": "ticket status unknown",
                                  "context_needed": ["ticket_status"], "timeout_at": "2026-11-29T10:05:00Z"}),
        _rec("deferral_resolved", {"action_id": "act_defer", "tool": "email", "operation": "send",
                                   "deferral_id": "dfr_1", "resolution_method": "reevaluation", "result": "ALLOW"}),
        _rec("deferral_resolved", {"action_id": "act_defer2", "tool": "email", "operation": "send",
                                   "deferral_id": "dfr_2", "resolution_method": "timeout", "result": "DENY"}),
        _requested("act_drift", "ALLOW", alerts=["drift_detected"]), _outcome("act_drift", True,
                                                                              injection=["ignore_previous"]),
        # an observed action (aarmor ingest otlp): the policy would have denied it; it ran, not blocked
        _observed(_requested("act_observed", "DENY", tool="shell", reason="no shell",
                             alerts=["observed_violation"])),
        _observed(_outcome("act_observed", True)),
        # hostile text where a door or a policy author controls it: tool, operation, reason, human
        _requested("act_hostile", "DENY", tool=HOSTILE, operation=HOSTILE, reason=HOSTILE, human=HOSTILE),
    ]
    receipts = [_receipt(a) for a in ("act_allow", "act_fail", "act_deny", "act_modify")]
    events = project(logs, receipts, export_parameters=export_parameters)
    t = "2026-11-29T10:00:01Z"
    events += [
        system_event("policy.loaded", time=t, severity="info", source="p1",
                     policy={"policy_id": "support-policy", "version": "3", "hash": "sha256:" + "cd" * 32,
                             "error": None}),
        system_event("policy.rejected", time=t, severity="high", source="p2",
                     policy={"policy_id": "support-policy", "version": "4", "hash": None,
                             "error": "rules[2].when: unknown field `contxt`" + HOSTILE}),
        system_event("verification.failed", time=t, severity="critical", source="v1",
                     alert={"kind": "chain_broken", "message": f"session {SESSION}: entry 7 does not chain",
                            "detail": {"session_id": SESSION, "seq": 7}}),
        system_event("telemetry.degraded", time=t, severity="high", source="d1",
                     alert={"kind": "sink_failing", "message": "sink `siem` failed 4 times in a row",
                            "detail": {"sink": "siem", "failures": 4}}),
        system_event("telemetry.dropped", time=t, severity="high", source="x1",
                     alert={"kind": "spool_full", "message": "12 events dropped", "detail": {"dropped": 12}}),
    ]
    missing = set(EVENT_TYPES) - {e.type for e in events}
    assert not missing, f"sample events miss {missing}"
    return events
