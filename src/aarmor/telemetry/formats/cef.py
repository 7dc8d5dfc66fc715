"""ArcSight Common Event Format (CEF:0) line of a telemetry event, for ArcSight- and QRadar-style consumers.

    CEF:0|aarmor|aarmor|<aarmor version>|<event type>|<name>|<severity 0-10>|<extension>

Escaping follows the CEF specification (Micro Focus "Implementing ArcSight CEF", rev. 25): in the header,
`\\` and `|`; in extension values, `\\` and `=`, and a line break is written `\\n` (`\\r` for a carriage
return), so one event is always one line. Other line separators (U+2028, U+0085, ...) and control
characters cannot be escaped in CEF and are replaced by a space. Extension keys are fixed identifiers.
Values are cut to the lengths the spec gives for each key (a cut ends with `…`), counted in characters.

Keys (docs/telemetry-formats.md): rt, externalId (the event_id: consumers drop duplicates by it), cat (the
event type), act (the decision, or the approval/deferral outcome), outcome, msg, suser, duser (an approver),
sproc (the agent), requestMethod (tool.operation), cs1..cs6 with their labels (session, action, receipt,
rule, policy, service), cn1 (failures/drops count where an alert has one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aarmor import __version__
from aarmor.telemetry.events import TelemetryEvent
from aarmor.telemetry.formats.ocsf import epoch_ms

__all__ = ["to_cef"]

# event severity -> CEF 0-10 (ArcSight: 0-3 Low, 4-6 Medium, 7-8 High, 9-10 Very-High)
_SEVERITY = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
_NAME_MAX = 512
# per-key lengths from the CEF key dictionary; `msg` is 1023, the csN strings 4000, user names 1023
_MAX = {"msg": 1023, "suser": 1023, "duser": 1023, "act": 63, "outcome": 63, "cat": 1023, "externalId": 40,
        "requestMethod": 1023, "sproc": 1023, "cs1": 4000, "cs2": 4000, "cs3": 4000, "cs4": 4000, "cs5": 4000,
        "cs6": 4000}
# kept out of a CEF line: C0/C1 controls other than \n and \r, and Unicode line/paragraph separators
_UNSAFE = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_LABELS = {"cs1": "sessionId", "cs2": "actionId", "cs3": "receiptId", "cs4": "ruleId", "cs5": "policy",
           "cs6": "service"}


def to_cef(event: TelemetryEvent) -> str:
    name = _name(event)
    header = ["CEF:0", "aarmor", "aarmor", __version__, event.type, name, str(_SEVERITY.get(event.severity, 0))]
    head = "|".join([header[0]] + [_header(h) for h in header[1:]])
    return head + "|" + " ".join(f"{k}={_value(k, v)}" for k, v in _extension(event).items())


def _extension(event: TelemetryEvent) -> dict[str, str]:
    act, ident, dec = event.action or {}, event.identity or {}, event.decision or {}
    approval, alert, policy = event.approval or {}, event.alert or {}, event.policy or {}
    act_text, outcome = _act_outcome(event)
    ext: dict[str, Any] = {
        "rt": epoch_ms(event.time), "externalId": event.event_id, "cat": event.type,
        "act": act_text, "outcome": outcome, "msg": _message(event),
        "suser": ident.get("human"), "duser": approval.get("approver"), "sproc": ident.get("agent"),
        "requestMethod": _call(act),
        "cs1": event.session_id, "cs2": act.get("action_id"), "cs3": event.receipt_id,
        "cs4": dec.get("rule_id"),
        "cs5": _policy_ref(dec.get("policy_id"), dec.get("policy_version")) or
        _policy_ref(policy.get("policy_id"), policy.get("version")),
        "cs6": ident.get("service"),
    }
    count = (alert.get("detail") or {}).get("failures", (alert.get("detail") or {}).get("dropped"))
    out: dict[str, str] = {}
    for key, value in ext.items():
        if value is None or value == "":
            continue
        out[key] = str(value)
        if key in _LABELS:
            out[key + "Label"] = _LABELS[key]
    if isinstance(count, int) and not isinstance(count, bool):
        out["cn1"], out["cn1Label"] = str(count), "count"
    return out


def _act_outcome(event: TelemetryEvent) -> tuple[str | None, str | None]:
    """`act`: what aarmor did (the decision or the workflow outcome); `outcome`: success or failure."""
    kind = event.type
    if kind.startswith("approval."):
        approval = event.approval or {}
        if kind == "approval.requested":
            return "STEP_UP", "pending"
        return ("APPROVED", "success") if approval.get("granted") else ("REJECTED", "failure")
    if kind.startswith("deferral."):
        deferral = event.deferral or {}
        if kind == "deferral.created":
            return "DEFER", "pending"
        ended = "DENY" if kind == "deferral.timed_out" else str(deferral.get("result") or "DENY")
        return ended, "failure" if ended == "DENY" else "success"
    result = _text((event.decision or {}).get("result"))
    if (event.decision or {}).get("enforcement") == "observed":  # aarmor enforced nothing: it observed
        return "OBSERVED", {"action.executed": "success", "action.failed": "failure"}.get(kind)
    if kind == "action.executed":
        return result, "success"
    if kind == "action.failed":
        return result, "failure"
    if kind == "action.decided":
        return result, {"ALLOW": "success", "MODIFY": "success", "DENY": "failure"}.get(str(result), "pending")
    if kind == "policy.loaded":
        return None, "success"
    if kind in ("policy.rejected", "verification.failed", "telemetry.degraded", "telemetry.dropped"):
        return None, "failure"
    return None, None


def _name(event: TelemetryEvent) -> str:
    call = _call(event.action or {})
    result = (event.decision or {}).get("result")
    decided = f"observed {call} (policy would decide {result})" \
        if (event.decision or {}).get("enforcement") == "observed" else f"{result} {call}"
    text = {"action.decided": decided, "action.executed": f"executed {call}",
            "action.failed": f"failed {call}"}.get(event.type)
    if text is None:
        text = event.type + (f" {call}" if call else "")
    return _cut(text, _NAME_MAX)


def _message(event: TelemetryEvent) -> str | None:
    for part, key in ((event.alert, "message"), (event.execution, "error"), (event.decision, "reason"),
                      (event.approval, "reason"), (event.deferral, "reason"), (event.policy, "error")):
        if part and part.get(key):
            return str(part[key])
    return None


def _call(act: Mapping[str, Any]) -> str | None:
    parts = [str(p) for p in (act.get("tool"), act.get("operation")) if p]
    return ".".join(parts) or None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _policy_ref(policy_id: Any, version: Any) -> str | None:
    if not policy_id:
        return None
    return f"{policy_id}@{version}" if version else str(policy_id)


def _header(text: str) -> str:
    """A header field: `\\` and `|` escaped; a header has no escape for a line break, so it becomes a space."""
    clean = _UNSAFE.sub(" ", text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return clean.replace("\\", "\\\\").replace("|", "\\|")


def _value(key: str, text: str) -> str:
    """An extension value: `\\`, `=` escaped, line breaks as `\\n`/`\\r`; cut to the key's length first."""
    clean = _cut(_UNSAFE.sub(" ", text), _MAX.get(key, 1023))
    return clean.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
