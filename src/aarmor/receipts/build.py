"""Building the unsigned receipt (AARM 2.7 schema, the R5 content list).

The receipt binds: the action (with redacted parameters and the digest of the exact parameters), the
requester context (human, service, agent, session, roles, scope, effective scope, delegation chain),
the decision (policy id, version and hash, matched rule, reason), the context (log chain head and its
seq), approval and deferral blocks when relevant, the execution outcome, and any error that made the
pipeline fail closed. `sign.py` adds the signature; nothing in a receipt is left unsigned.

Rules:
- `kind` is one of `RECEIPT_KINDS`; `deferral` and `resolution` receipts carry a `deferral` block.
- AARM R5: a `resolution` receipt always says how and when the deferral ended: a block whose
  `resolution_method`/`resolved_at` are missing (the wait itself failed) is completed as `error` at
  `now`, never left blank.
- AARM threat 10: parameters (and modified parameters) appear only as their redacted view plus the digest
  of the exact value; credential-shaped text in error messages is replaced by its digest.
- `seq` is a non-negative int and `prev_receipt_hash` a `sha256:` digest (caller misuse otherwise).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aarmor.canonical import format_ts
from aarmor.model import Action, Decision, thaw
from aarmor.receipts.redact import RedactionSettings, parameters_digest, redact_parameters, redact_text

__all__ = ["RECEIPT_KINDS", "RECEIPT_VERSION", "build_receipt"]

RECEIPT_VERSION = "1.0"
#: decision: one per action; deferral: at DEFER time; resolution: when a deferral ends (AARM R4/R5)
RECEIPT_KINDS = ("decision", "deferral", "resolution")
_DECISION_FIELDS = ("result", "policy", "rule_id", "matched_rules", "reason", "classification", "risk_level",
                    "confidence", "alignment", "defer_trigger", "context_needed", "errors", "approvers",
                    "timeout")
_REQUESTER_FIELDS = ("human", "service", "agent", "session", "roles", "scope", "effective_scope",
                     "delegation_chain", "verified_by", "token_id")


def build_receipt(*, kind: str, action: Action, decision: Decision, session_seq: int, prev_receipt_hash: str,
                  context_hash: str, log_seq: int, now: datetime, redaction: RedactionSettings,
                  modified_parameters: Mapping[str, Any] | None = None,
                  approval: Mapping[str, Any] | None = None, deferral: Mapping[str, Any] | None = None,
                  execution: Mapping[str, Any] | None = None,
                  error: Mapping[str, Any] | None = None,
                  parameters_view: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The receipt body without `signature` (see docs/receipts.md for every field).

    `parameters_view` is `redact_parameters(action.parameters, redaction)` when the caller already has
    it; `action.parameters_digest` is used when set.

    Raises:
        ValueError: unknown `kind`, a deferral/resolution receipt without `deferral`, a negative
            `session_seq`, or a `prev_receipt_hash` that is not a `sha256:` digest (caller misuse).
        InputError: parameters that are not JSON.
    """
    if kind not in RECEIPT_KINDS:
        raise ValueError(f"receipt kind `{kind}` is not one of {', '.join(RECEIPT_KINDS)}")
    if type(session_seq) is not int or session_seq < 0:
        raise ValueError(f"session_seq must be a non-negative int, got `{session_seq!r}`")
    if not prev_receipt_hash.startswith("sha256:"):
        raise ValueError(f"prev_receipt_hash `{prev_receipt_hash}` is not a sha256: digest")
    if kind != "decision" and deferral is None:
        raise ValueError(f"a `{kind}` receipt needs the deferral block")
    issued_at = format_ts(now)
    ident = action.identity.to_json()
    requester = {k: ident.get(k) for k in _REQUESTER_FIELDS}
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
    decision_block = {k: d[k] for k in _DECISION_FIELDS}
    # AARM threat 10: a fail-closed reason can quote the input that failed; never a credential
    decision_block["reason"] = redact_text(decision_block["reason"])
    decision_block["errors"] = [redact_text(e) for e in decision_block["errors"]]
    modification = None
    if modified_parameters is not None:
        modification = {
            "original_parameters_digest": act["parameters_digest"],
            "modified_parameters": redact_parameters(modified_parameters, redaction),
            "modified_parameters_digest": parameters_digest(modified_parameters),
            "modifications": thaw(decision.modifications) if decision.modifications is not None else None,
        }
    deferral_block = dict(deferral) if deferral is not None else None
    if kind == "resolution" and deferral_block is not None:
        # AARM R5: resolution method and time are always present (an error while waiting ended it)
        if not deferral_block.get("resolution_method"):
            deferral_block["resolution_method"] = "error"
        if not deferral_block.get("resolved_at"):
            deferral_block["resolved_at"] = issued_at
    execution_block = dict(execution) if execution is not None else None
    if execution_block is not None and isinstance(execution_block.get("error"), str):
        execution_block["error"] = redact_text(execution_block["error"])
    error_block = dict(error) if error is not None else None
    if error_block is not None and isinstance(error_block.get("message"), str):
        error_block["message"] = redact_text(error_block["message"])
    return {
        "receipt_id": "rct_" + uuid.uuid4().hex,
        "version": RECEIPT_VERSION,
        "kind": kind,
        "session_id": action.session_id,
        "seq": session_seq,
        "prev_receipt_hash": prev_receipt_hash,
        "issued_at": issued_at,
        "action": act,
        "decision": decision_block,
        "modification": modification,
        "context": {"context_hash": context_hash, "log_seq": log_seq},
        "approval": dict(approval) if approval is not None else None,
        "deferral": deferral_block,
        "execution": execution_block,
        "error": error_block,
    }
