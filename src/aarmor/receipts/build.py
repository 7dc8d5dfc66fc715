"""Building the unsigned receipt (AARM 2.7 schema, the R5 content list).

The receipt binds: the action (with redacted parameters and the digest of the exact parameters), the
requester context (human, service, agent, session, roles, scope, effective scope, delegation chain),
the decision (policy id, version and hash, matched rule, reason), the context (log chain head and its
seq), approval and deferral blocks when relevant, the execution outcome, and any error that made the
pipeline fail closed. `sign.py` adds the signature; nothing in a receipt is left unsigned.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aarmor.canonical import format_ts
from aarmor.model import Action, Decision, thaw
from aarmor.receipts.redact import parameters_digest, redact_parameters

__all__ = ["RECEIPT_KINDS", "RECEIPT_VERSION", "build_receipt"]

RECEIPT_VERSION = "1.0"
#: decision: one per action; deferral: at DEFER time; resolution: when a deferral ends (AARM R4/R5)
RECEIPT_KINDS = ("decision", "deferral", "resolution")


def build_receipt(*, kind: str, action: Action, decision: Decision, session_seq: int, prev_receipt_hash: str,
                  context_hash: str, log_seq: int, now: datetime, redaction: Any,
                  modified_parameters: Mapping[str, Any] | None = None,
                  approval: Mapping[str, Any] | None = None, deferral: Mapping[str, Any] | None = None,
                  execution: Mapping[str, Any] | None = None,
                  error: Mapping[str, Any] | None = None,
                  parameters_view: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The receipt body without `signature` (see docs/receipts.md for every field).

    `parameters_view` is `redact_parameters(action.parameters, redaction)` when the caller already has
    it; `action.parameters_digest` is used when set.

    Raises:
        ValueError: unknown `kind`.
    """
    if kind not in RECEIPT_KINDS:
        raise ValueError(f"receipt kind `{kind}` is not one of {', '.join(RECEIPT_KINDS)}")
    ident = action.identity.to_json()
    requester = {k: ident[k] for k in ("human", "service", "agent", "session", "roles", "scope",
                                        "effective_scope", "delegation_chain", "verified_by")}
    act: dict[str, Any] = {
        "action_id": action.action_id,
        "timestamp": format_ts(action.timestamp),
        "tool": action.tool,
        "operation": action.operation,
        "parameters": dict(parameters_view) if parameters_view is not None
        else redact_parameters(action.parameters, redaction),
        "parameters_digest": action.parameters_digest or parameters_digest(action.parameters),
        "requester_context": requester,
    }
    if action.raw_tool is not None:
        act["raw_tool"] = action.raw_tool
    d = decision.to_json()
    modification = None
    if modified_parameters is not None:
        modification = {
            "original_parameters_digest": act["parameters_digest"],
            "modified_parameters": redact_parameters(modified_parameters, redaction),
            "modified_parameters_digest": parameters_digest(modified_parameters),
            "modifications": thaw(decision.modifications) if decision.modifications is not None else None,
        }
    return {
        "receipt_id": "rct_" + uuid.uuid4().hex,
        "version": RECEIPT_VERSION,
        "kind": kind,
        "session_id": action.session_id,
        "seq": session_seq,
        "prev_receipt_hash": prev_receipt_hash,
        "issued_at": format_ts(now),
        "action": act,
        "decision": {k: d[k] for k in ("result", "policy", "rule_id", "matched_rules", "reason", "classification",
                                       "risk_level", "confidence", "alignment", "defer_trigger",
                                       "context_needed", "errors", "approvers", "timeout")},
        "modification": modification,
        "context": {"context_hash": context_hash, "log_seq": log_seq},
        "approval": dict(approval) if approval is not None else None,
        "deferral": dict(deferral) if deferral is not None else None,
        "execution": dict(execution) if execution is not None else None,
        "error": dict(error) if error is not None else None,
    }
