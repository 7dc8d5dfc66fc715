"""Telemetry events (AARM R8, 2.8): aarmor's own documented event schema, `aarmor.telemetry/1`.

Every event is a projection of what aarmor has already recorded durably: the context log entries and the
receipts one commit writes (`project`), or a process-level fact (policy loaded or rejected, a chain or
receipt that did not verify, the exporter's own alerts). So an event exists only for what happened, and
the spool it waits in (the store's `telemetry` table) is written in the same transaction as the record it
comes from: a crash cannot keep one without the other.

Shape of `TelemetryEvent.to_json()` (every key present, null when it does not apply):

    {"schema": "aarmor.telemetry/1", "event_id": "evt_<32 hex>",   # the idempotency key: stable, unique
     "type": one of EVENT_TYPES, "time": "2026-11-29T10:00:00.000Z", "severity": one of SEVERITIES,
     "session_id", "receipt_id",
     "action": {"action_id", "tool", "operation", "timestamp" (when the call reached aarmor: an
                "action.decided" event's time minus it is the decision's duration), "parameters_digest",
                "parameters": {allowlisted fields}},
     "identity": {"human", "service", "agent", "verified_by", "roles", "effective_scope"},
     "decision": {"result", "rule_id", "reason", "classification", "risk_level", "policy_id",
                  "policy_version", "policy_hash"} (plus "enforcement": "observed" on the events of an
                 observed action, aarmor.observed: `result` is what the policy would have decided;
                 nothing was enforced),
     "execution": {"executed", "success", "error", "output_digest", "classifications"},
     "approval": {"request_id", "approvers", "approver", "granted", "reason", "timeout"},
     "deferral": {"deferral_id", "reason", "context_needed", "timeout_at", "resolution_method", "result"},
     "alert": {"kind", "message", "detail"},
     "policy": {"policy_id", "version", "hash", "error"}}

Privacy (threat 10, side channels): parameters travel as their digest; a parameter value is exported only
when its field is in `telemetry.export_parameters` (and then as the receipt's redacted view of it, so a
field the redaction settings digest stays a digest). Tool outputs never leave: their digest and the
classification labels they carried do. Reasons and error messages are aarmor's own text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EVENT_TYPES", "SCHEMA", "SEVERITIES", "TelemetryEvent", "project", "severity_at_least"]

SCHEMA = "aarmor.telemetry/1"
EVENT_TYPES = (
    "action.decided",        # a decision (every result, DEFER included), when it is recorded
    "action.executed",       # the tool ran and returned
    "action.failed",         # the tool ran and failed
    "approval.requested",    # a STEP_UP waits for an approver
    "approval.decided",      # granted, denied or timed out
    "deferral.created",      # a DEFER suspended the action
    "deferral.resolved",     # it ended by re-evaluation (ALLOW, MODIFY, DENY, STEP_UP)
    "deferral.timed_out",    # it ended by its timeout (DENY)
    "alert.drift",           # the session drifted from the user's intent at a decision
    "alert.injection",       # a tool output carried prompt-injection indicators
    "alert.observed",        # an observed action (not mediated) the policy would not have let run
    "policy.loaded",
    "policy.rejected",
    "verification.failed",   # a context log chain or a receipt did not verify
    "telemetry.degraded",    # a sink failed several times in a row
    "telemetry.dropped",     # the spool was full: events were dropped (counted)
)
SEVERITIES = ("info", "low", "medium", "high", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_ALERTS = {"drift_detected": "alert.drift", "injection_suspected": "alert.injection",
           "observed_violation": "alert.observed"}
#: the marker of observed actions (aarmor.observed.OBSERVED): seen after the fact, nothing enforced
_OBSERVED = "observed"


def severity_at_least(severity: str, floor: str) -> bool:
    return _RANK.get(severity, 0) >= _RANK.get(floor, 0)


@dataclass(frozen=True, slots=True)
class TelemetryEvent:
    """One event. `event_id` is derived from what it projects (entry hash + type), so projecting the same
    record twice gives the same id: receivers drop duplicates by it."""

    event_id: str
    type: str
    time: str
    severity: str = "info"
    session_id: str | None = None
    receipt_id: str | None = None
    action: Mapping[str, Any] | None = None
    identity: Mapping[str, Any] | None = None
    decision: Mapping[str, Any] | None = None
    execution: Mapping[str, Any] | None = None
    approval: Mapping[str, Any] | None = None
    deferral: Mapping[str, Any] | None = None
    alert: Mapping[str, Any] | None = None
    policy: Mapping[str, Any] | None = None
    #: the spool's sequence number (set when read back from the store; not part of the event)
    seq: int | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "event_id": self.event_id, "type": self.type, "time": self.time,
                "severity": self.severity, "session_id": self.session_id, "receipt_id": self.receipt_id,
                "action": _plain(self.action), "identity": _plain(self.identity), "decision": _plain(self.decision),
                "execution": _plain(self.execution), "approval": _plain(self.approval),
                "deferral": _plain(self.deferral), "alert": _plain(self.alert), "policy": _plain(self.policy)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], seq: int | None = None) -> TelemetryEvent:
        return cls(d["event_id"], d["type"], d["time"], d.get("severity", "info"), d.get("session_id"),
                   d.get("receipt_id"), d.get("action"), d.get("identity"), d.get("decision"), d.get("execution"),
                   d.get("approval"), d.get("deferral"), d.get("alert"), d.get("policy"), seq=seq)


def _plain(m: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if m is None else dict(m)


def event_id(source: str, type_: str) -> str:
    """A stable id for the event of `type_` projected from `source` (an entry hash, a receipt id...)."""
    return "evt_" + hashlib.sha256(f"{source}|{type_}".encode()).hexdigest()[:32]


# --- projection of committed records -------------------------------------------------------------------

def project(logs: Sequence[Any], receipts: Sequence[Any], *, export_parameters: frozenset[str] = frozenset()
            ) -> list[TelemetryEvent]:
    """The events one commit's log records (`LogRecord`) and receipts (`ReceiptRecord`) stand for, in order.

    Pure: the same records always give the same events (and ids).
    """
    receipt_of = {r.action_id: r.receipt_id for r in receipts}
    receipt_body = {r.action_id: r.body for r in receipts}
    out: list[TelemetryEvent] = []
    requested: dict[str, Mapping[str, Any]] = {}
    for rec in logs:
        body = rec.body
        if rec.kind == "action_requested":
            act, dec = body.get("action") or {}, body.get("decision") or {}
            requested[str(act.get("action_id"))] = body
            observed = body.get("enforcement") == _OBSERVED
            ev = _event(rec, "action.decided", _decision_severity(dec), act, dec,
                        receipt_of.get(act.get("action_id")), export_parameters)
            out.append(_observed(ev) if observed else ev)
            for signal in body.get("alerts") or ():
                kind = _ALERTS.get(signal)
                if kind is not None:
                    detail = {"would_decide": dec.get("result"), "rule_id": dec.get("rule_id"),
                              "reason": dec.get("reason")} if kind == "alert.observed" else None
                    out.append(_alert(rec, kind, act, signal, "high", detail=detail))
        elif rec.kind == "action_outcome":
            aid = body.get("action_id")
            if body.get("injection"):
                out.append(_alert(rec, "alert.injection", body, "injection_suspected", "high",
                                  detail={"indicators": list(body["injection"])}))
            recovered = body.get("executed") is None and body.get("recovered")
            if not body.get("executed") and not recovered:
                continue  # a DENY: its `action.decided` says all
            req = requested.get(str(aid)) or _from_receipt(receipt_body.get(str(aid)))
            kind = "action.executed" if body.get("success") else "action.failed"
            # crash recovery (its process ended mid-action): failed, executed unknown (null), worth a look
            severity = "medium" if recovered else "info" if body.get("success") else "low"
            ev = _event(rec, kind, severity, req.get("action") or body,
                        req.get("decision"), receipt_of.get(aid), export_parameters)
            error = body.get("error") or {}
            if body.get("enforcement") == _OBSERVED:
                ev = _observed(ev)
            out.append(_replace(ev, execution={
                "executed": None if recovered else True, "success": body.get("success"), "error": error.get("class"),
                "output_digest": body.get("output_digest"),
                "classifications": list(body.get("classifications") or ())}))
        elif rec.kind in ("approval_requested", "approval_decided"):
            out.append(_approval(rec, receipt_of))
        elif rec.kind in ("deferral_created", "deferral_resolved"):
            out.append(_deferral(rec, receipt_of))
    return out


def _from_receipt(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The action (with its requester context as identity) and decision a receipt records."""
    if not body:
        return {}
    act = dict(body.get("action") or {})
    act["identity"] = act.get("requester_context")
    return {"action": act, "decision": body.get("decision")}


def _observed(ev: TelemetryEvent) -> TelemetryEvent:
    """Mark an observed action's event: its decision is what the policy would have decided."""
    return _replace(ev, decision={**(ev.decision or {}), "enforcement": _OBSERVED})


def _replace(ev: TelemetryEvent, **changes: Any) -> TelemetryEvent:
    import dataclasses

    return dataclasses.replace(ev, **changes)


def _decision_severity(dec: Mapping[str, Any]) -> str:
    result = dec.get("result")
    if result == "DENY":
        return {"CRITICAL": "critical", "HIGH": "high"}.get(str(dec.get("risk_level")), "medium")
    if result in ("STEP_UP", "DEFER"):
        return "medium"
    return "info"


def _identity(ident: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not ident:
        return None
    return {"human": ident.get("human"), "service": ident.get("service"), "agent": ident.get("agent"),
            "verified_by": ident.get("verified_by"), "roles": list(ident.get("roles") or ()),
            "effective_scope": list(ident.get("effective_scope") or ())}


def _action(act: Mapping[str, Any], export_parameters: frozenset[str]) -> dict[str, Any]:
    params = act.get("parameters") or {}
    shown = {k: params[k] for k in sorted(export_parameters) if isinstance(params, Mapping) and k in params}
    return {"action_id": act.get("action_id"), "tool": act.get("tool"), "operation": act.get("operation"),
            "timestamp": act.get("timestamp"), "parameters_digest": act.get("parameters_digest"),
            "parameters": shown}


def _decision(dec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not dec:
        return None
    policy = dec.get("policy") or {}
    return {"result": dec.get("result"), "rule_id": dec.get("rule_id"), "reason": dec.get("reason"),
            "classification": dec.get("classification"), "risk_level": dec.get("risk_level"),
            "policy_id": policy.get("policy_id"), "policy_version": policy.get("version"),
            "policy_hash": policy.get("hash")}


def _event(rec: Any, type_: str, severity: str, act: Mapping[str, Any], dec: Mapping[str, Any] | None,
           receipt_id: str | None, export_parameters: frozenset[str]) -> TelemetryEvent:
    return TelemetryEvent(event_id(rec.entry_hash, type_), type_, rec.recorded_at, severity, rec.session_id,
                          receipt_id, _action(act, export_parameters), _identity(act.get("identity")),
                          _decision(dec))


def _alert(rec: Any, type_: str, act: Mapping[str, Any], signal: str, severity: str,
           detail: Mapping[str, Any] | None = None) -> TelemetryEvent:
    what = {"alert.drift": "drifted from the user's original request",
            "alert.observed": f"observed action `{act.get('tool')}` (not mediated, not blocked) is one the policy "
                              f"would have decided {(detail or {}).get('would_decide')}"}.get(
        type_, "a tool output carried prompt-injection indicators")
    return TelemetryEvent(event_id(rec.entry_hash, type_), type_, rec.recorded_at, severity, rec.session_id,
                          action={"action_id": act.get("action_id"), "tool": act.get("tool"),
                                  "operation": act.get("operation"), "timestamp": act.get("timestamp"),
                                  "parameters_digest": act.get("parameters_digest"), "parameters": {}},
                          identity=_identity(act.get("identity")),
                          alert={"kind": signal, "message": f"session {rec.session_id}: {what}",
                                 "detail": dict(detail or {})})


def _about(b: Mapping[str, Any]) -> dict[str, Any] | None:
    """The action a lifecycle entry is about (`action_id`, `tool`, `operation` on its body)."""
    if not b.get("action_id"):
        return None
    return {"action_id": b.get("action_id"), "tool": b.get("tool"), "operation": b.get("operation"),
            "timestamp": None, "parameters_digest": None, "parameters": {}}


def _approval(rec: Any, receipt_of: Mapping[str, str]) -> TelemetryEvent:
    b = rec.body
    type_ = "approval.requested" if rec.kind == "approval_requested" else "approval.decided"
    approval = {"request_id": b.get("request_id"), "approvers": list(b.get("approvers") or ()),
                "approver": b.get("approver"), "granted": b.get("granted"), "reason": b.get("reason"),
                "timeout": b.get("timeout")}
    severity = "medium" if type_ == "approval.requested" or not b.get("granted") else "info"
    return TelemetryEvent(event_id(rec.entry_hash, type_), type_, rec.recorded_at, severity, rec.session_id,
                          receipt_of.get(str(b.get("action_id"))), _about(b), approval=approval)


def _deferral(rec: Any, receipt_of: Mapping[str, str]) -> TelemetryEvent:
    b = rec.body
    method = b.get("resolution_method")
    type_ = "deferral.created" if rec.kind == "deferral_created" else (
        "deferral.timed_out" if method == "timeout" else "deferral.resolved")
    deferral = {"deferral_id": b.get("deferral_id"), "reason": b.get("reason"),
                "context_needed": list(b.get("context_needed") or ()), "timeout_at": b.get("timeout_at"),
                "resolution_method": method, "result": b.get("result")}
    severity = "info" if type_ == "deferral.resolved" and b.get("result") != "DENY" else "medium"
    return TelemetryEvent(event_id(rec.entry_hash, type_), type_, rec.recorded_at, severity, rec.session_id,
                          receipt_of.get(str(b.get("action_id"))), _about(b), deferral=deferral)


def system_event(type_: str, *, time: str, severity: str, source: str, alert: Mapping[str, Any] | None = None,
                 policy: Mapping[str, Any] | None = None) -> TelemetryEvent:
    """A process-level event (policy, verification, the exporter's own alerts); `source` makes its id."""
    return TelemetryEvent(event_id(source, type_), type_, time, severity, alert=alert, policy=policy)


def verification_failed(what: str, message: str, detail: Mapping[str, Any], *, time: str) -> TelemetryEvent:
    """`verification.failed` for a context log chain or receipts that did not verify (`what`: chain, receipts)."""
    return system_event("verification.failed", time=time, severity="critical",
                        source=f"{what}|{message}|{time}",
                        alert={"kind": f"{what}_not_verified", "message": message, "detail": dict(detail)})


def types_matching(patterns: Iterable[str]) -> frozenset[str]:
    """Event types named by `patterns` (an exact type, or a prefix ending in `.*`: `alert.*`)."""
    out = set()
    for p in patterns:
        if p.endswith(".*"):
            out |= {t for t in EVENT_TYPES if t.startswith(p[:-1])}
        elif p in EVENT_TYPES:
            out.add(p)
        else:
            raise ValueError(f"`{p}` is not an event type ({', '.join(EVENT_TYPES)}) or a prefix like `alert.*`")
    return frozenset(out)
