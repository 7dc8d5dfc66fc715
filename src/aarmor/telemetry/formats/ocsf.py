"""OCSF 1.7.0 projection of a telemetry event (docs/telemetry-formats.md has the mapping table).

One event gives one OCSF object, so a line in a sink is always one event and its `metadata.uid` (the
`event_id`) stays the idempotency key:

- an action that is admitted, executed, failed, suspended or waits for an approver is API Activity (6003);
- a denial (`action.decided` with DENY), a drift or injection alert and a record that did not verify are
  Detection Findings (2004): something a SOC should look at, with the attempted call as evidence;
- approvals and deferrals are API Activity about the same call (OCSF has no approval workflow class):
  the outcome is in `disposition_id`/`action_id` (security_control profile) and `status_id`;
- policy loads and rejections are Application Lifecycle (6002, Update); the exporter's own alerts are
  Application Error (6008).

What OCSF has no attribute for (rule ids, risk level, digests, approval and deferral details) goes under
`unmapped.aarmor`. Parameter values appear only as `action.parameters` carries them (already restricted to
`telemetry.export_parameters` upstream).

Version 1.7.0, not the 1.1 AARM.md names: it is the newest schema pydantic-ocsf bundles, the one the tests
validate against, and every class used here exists in it with the attributes used.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aarmor import __version__
from aarmor.telemetry.events import SCHEMA, TelemetryEvent

__all__ = ["OCSF_VERSION", "epoch_ms", "to_ocsf"]

OCSF_VERSION = "1.7.0"
PROFILES = ["security_control"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}

# decision result -> (action_id, action, disposition_id, disposition). MODIFY and STEP_UP have no faithful
# OCSF disposition ("Corrected" is about corrupt files, "Challenge" about bots), so they are 99 Other with
# aarmor's name; a STEP_UP or DEFER has not been allowed or denied yet: action 0 Unknown.
_OUTCOME: dict[str, tuple[int, str, int, str]] = {
    "ALLOW": (1, "Allowed", 1, "Allowed"),
    "DENY": (2, "Denied", 2, "Blocked"),
    "MODIFY": (1, "Allowed", 99, "MODIFY"),
    "STEP_UP": (0, "Unknown", 99, "STEP_UP"),
    "DEFER": (0, "Unknown", 14, "Delayed"),
    "APPROVED": (1, "Allowed", 8, "Approved"),
    "REJECTED": (2, "Denied", 25, "Rejected"),
    # an observed action (aarmor.observed): seen after the fact, neither allowed nor blocked by aarmor
    "OBSERVED": (99, "Observed", 17, "Logged"),
}
_ACTIVITY_CAPTION = {0: "Unknown", 99: "Other"}
_API_STATUS = {1: "Success", 2: "Failure", 99: "Other"}


def to_ocsf(event: TelemetryEvent) -> dict[str, Any]:
    """The OCSF object for `event` (a plain dict, ready for compact JSON)."""
    kind = event.type
    decision = event.decision or {}
    if kind.startswith("alert.") or kind == "verification.failed" or (
            kind == "action.decided" and decision.get("result") == "DENY" and not _observed(event)):
        return _detection_finding(event)
    if kind.startswith("policy."):
        return _policy_lifecycle(event)
    if kind.startswith("telemetry."):
        return _application_error(event)
    if kind.startswith(("action.", "approval.", "deferral.")):
        return _api_activity(event)
    raise ValueError(f"no OCSF mapping for event type `{kind}`")


# --- classes --------------------------------------------------------------------------------------------

def _api_activity(event: TelemetryEvent) -> dict[str, Any]:
    action_id, action, disposition_id, disposition, status_id, detail = _api_outcome(event)
    activity_id, activity_name = _api_activity_id(event)
    out = _base(event, 6, "Application Activity", 6003, "API Activity", activity_id, activity_name)
    out.update(actor=_actor(event), api=_api(event), src_endpoint=_src_endpoint(event),
               action_id=action_id, action=action, disposition_id=disposition_id, disposition=disposition,
               status_id=status_id, status=_API_STATUS.get(status_id, "Unknown"))
    if detail:
        out["status_detail"] = detail
    _add_policy(out, event)
    return _finish(out, event)


def _detection_finding(event: TelemetryEvent) -> dict[str, Any]:
    out = _base(event, 2, "Findings", 2004, "Detection Finding", 1, "Create")
    decision, alert = event.decision or {}, event.alert or {}
    info: dict[str, Any] = {"uid": event.event_id, "title": _title(event), "types": [event.type],
                            "created_time": epoch_ms(event.time)}
    if event.type == "action.decided":
        info["desc"] = _text(decision.get("reason"))
        info["analytic"] = _drop_none({"type_id": 1, "type": "Rule", "uid": _text(decision.get("rule_id")),
                                       "name": _text(decision.get("rule_id"))})
        out.update(action_id=2, action="Denied", disposition_id=2, disposition="Blocked")
    else:
        info["desc"] = _text(alert.get("message"))
        info["analytic"] = {"type_id": 2 if event.type == "alert.drift" else 1,
                            "type": "Behavioral" if event.type == "alert.drift" else "Rule",
                            "name": f"aarmor {event.type}"}
        if event.type.startswith("alert."):  # reported, not blocked by this event
            out.update(disposition_id=19, disposition="Alert")
    out.update(finding_info=_drop_none(info), is_alert=True, status_id=1, status="New")
    if event.action:
        out["evidences"] = [{"actor": _actor(event), "api": _api(event)}]
    _add_policy(out, event)
    return _finish(out, event)


def _policy_lifecycle(event: TelemetryEvent) -> dict[str, Any]:
    policy = event.policy or {}
    out = _base(event, 6, "Application Activity", 6002, "Application Lifecycle", 8, "Update")
    ok = event.type == "policy.loaded"
    out.update(app=_product(), status_id=1 if ok else 2, status="Success" if ok else "Failure")
    if not ok:
        out["status_detail"] = _text(policy.get("error"))
    if policy.get("policy_id"):
        out["policy"] = _drop_none({"uid": _text(policy.get("policy_id")), "name": _text(policy.get("policy_id")),
                                    "version": _text(policy.get("version")),
                                    "data": _drop_none({"hash": policy.get("hash")}) or None})
    return _finish(out, event)


def _application_error(event: TelemetryEvent) -> dict[str, Any]:
    out = _base(event, 6, "Application Activity", 6008, "Application Error", 1, "General Error")
    out.update(status_id=2, status="Failure")
    return _finish(out, event)


# --- shared pieces --------------------------------------------------------------------------------------

def _base(event: TelemetryEvent, category_uid: int, category_name: str, class_uid: int, class_name: str,
          activity_id: int, activity_name: str) -> dict[str, Any]:
    severity_id = _SEVERITY_ID.get(event.severity, 0)
    metadata: dict[str, Any] = {"version": OCSF_VERSION, "product": _product(), "uid": event.event_id,
                                "log_name": "aarmor.telemetry", "log_version": SCHEMA, "profiles": PROFILES}
    action_id = (event.action or {}).get("action_id")
    if action_id:  # every event about one action shares it: a SIEM can join decision, approval, outcome
        metadata["correlation_uid"] = str(action_id)
    return {"category_uid": category_uid, "category_name": category_name, "class_uid": class_uid,
            "class_name": class_name, "activity_id": activity_id, "activity_name": activity_name,
            "type_uid": class_uid * 100 + activity_id,
            # the caption of type_uid: for 99 it is "Other" whatever source name activity_name carries
            "type_name": f"{class_name}: {_ACTIVITY_CAPTION.get(activity_id, activity_name)}",
            "time": epoch_ms(event.time), "severity_id": severity_id,
            "severity": _SEVERITY_NAME.get(severity_id, "Unknown"), "metadata": metadata}


def _finish(out: dict[str, Any], event: TelemetryEvent) -> dict[str, Any]:
    message = _message(event)
    if message:
        out["message"] = message
    out["unmapped"] = {"aarmor": _unmapped(event)}
    return out


def _product() -> dict[str, Any]:
    return {"name": "aarmor", "vendor_name": "aarmor", "version": __version__}


def _observed(event: TelemetryEvent) -> bool:
    return (event.decision or {}).get("enforcement") == "observed"


def _api_outcome(event: TelemetryEvent) -> tuple[int, str, int, str, int, str | None]:
    """(action_id, action, disposition_id, disposition, status_id, status_detail) of an API Activity."""
    kind = event.type
    if kind.startswith("approval."):
        approval = event.approval or {}
        if kind == "approval.requested":
            result = "STEP_UP"
        else:
            result = "APPROVED" if approval.get("granted") else "REJECTED"
        detail = _text(approval.get("reason"))
    elif kind.startswith("deferral."):
        deferral = event.deferral or {}
        if kind == "deferral.created":
            result = "DEFER"
        elif kind == "deferral.timed_out":
            result = "DENY"
        else:
            result = str(deferral.get("result") or "DENY")
        detail = _text(deferral.get("reason"))
    else:
        decision = event.decision or {}
        result = "OBSERVED" if _observed(event) else str(decision.get("result") or "")
        detail = _text(decision.get("reason"))
    action_id, action, disposition_id, disposition = _OUTCOME.get(result, (0, "Unknown", 0, "Unknown"))
    if kind == "action.failed":
        return action_id, action, disposition_id, disposition, 2, _text((event.execution or {}).get("error"))
    if kind == "action.executed":
        return action_id, action, disposition_id, disposition, 1, None
    status_id = {1: 1, 2: 2}.get(action_id, 99)  # admitted, refused, or still pending
    return action_id, action, disposition_id, disposition, status_id, detail


def _api_activity_id(event: TelemetryEvent) -> tuple[int, str]:
    """99 Other with the tool's own operation as the activity name: aarmor does not know whether a tool
    operation creates, reads, updates or deletes, and a guessed CRUD verb would mislead a query."""
    operation = (event.action or {}).get("operation")
    return (99, str(operation)) if operation else (0, "Unknown")


def _api(event: TelemetryEvent) -> dict[str, Any]:
    act = event.action or {}
    tool, operation = act.get("tool"), act.get("operation")
    api: dict[str, Any] = {"operation": _text(operation or tool) or "unknown"}
    if tool:
        api["service"] = {"name": str(tool)}
    request: dict[str, Any] = {}
    params = act.get("parameters")
    if params:
        request["data"] = {"parameters": dict(params)}
    if act.get("action_id"):
        request["uid"] = str(act["action_id"])
        api["request"] = request
    error = (event.execution or {}).get("error")
    if error:
        api["response"] = {"error": str(error)}
    return api


def _actor(event: TelemetryEvent) -> dict[str, Any]:
    ident = event.identity or {}
    actor: dict[str, Any] = {}
    if event.type == "approval.decided" and (event.approval or {}).get("approver"):
        actor["user"] = {"name": str((event.approval or {})["approver"]), "type_id": 1, "type": "User"}
    elif ident.get("human"):
        actor["user"] = {"name": str(ident["human"]), "type_id": 1, "type": "User"}
    if ident.get("agent"):
        actor["app_name"] = str(ident["agent"])
    if ident.get("service"):
        actor["invoked_by"] = str(ident["service"])
    if event.session_id:
        actor["session"] = {"uid": str(event.session_id)}
    if not actor.keys() - {"session"}:
        actor["app_name"] = "aarmor"  # a lifecycle or system event: aarmor itself acted
    return actor


def _src_endpoint(event: TelemetryEvent) -> dict[str, Any]:
    """Where the call came from: the agent (or service) by name; aarmor has no network address for it."""
    ident = event.identity or {}
    name = ident.get("agent") or ident.get("service") or ident.get("human")
    return {"name": str(name)} if name else {"svc_name": "aarmor"}


def _add_policy(out: dict[str, Any], event: TelemetryEvent) -> None:
    decision = event.decision or {}
    if decision.get("policy_id"):
        out["policy"] = _drop_none({
            "uid": _text(decision.get("policy_id")), "name": _text(decision.get("policy_id")),
            "version": _text(decision.get("policy_version")),
            "data": _drop_none({"rule_id": decision.get("rule_id"), "hash": decision.get("policy_hash")}) or None})


def _title(event: TelemetryEvent) -> str:
    act = event.action or {}
    call = ".".join(str(p) for p in (act.get("tool"), act.get("operation")) if p)
    if event.type == "action.decided":
        return f"aarmor denied {call or 'an action'}"
    if event.type == "verification.failed":
        return "aarmor: a context log chain or a receipt did not verify"
    return f"aarmor {event.type}" + (f" at {call}" if call else "")


def _message(event: TelemetryEvent) -> str | None:
    for part, key in ((event.alert, "message"), (event.decision, "reason"), (event.approval, "reason"),
                      (event.deferral, "reason"), (event.policy, "error")):
        if part and part.get(key):
            return str(part[key])
    return None


def _unmapped(event: TelemetryEvent) -> dict[str, Any]:
    """aarmor's fields OCSF has no attribute for (parameters stay in `api.request.data` only)."""
    ident = event.identity or {}
    act = event.action or {}
    out: dict[str, Any] = {"type": event.type, "receipt_id": event.receipt_id,
                           "parameters_digest": act.get("parameters_digest"),
                           "identity": {k: ident.get(k) for k in ("verified_by", "roles", "effective_scope")}
                           if ident else None}
    for name in ("decision", "execution", "approval", "deferral", "alert", "policy"):
        part = getattr(event, name)
        out[name] = dict(part) if part is not None else None
    return _drop_none(out)


def epoch_ms(iso: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time (`...Z` or an offset; naive means UTC), exactly."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
