"""The OpenAPI 3.1 document of the JSON API (served at `/openapi.json`, tested with schemathesis).

Request bodies come from the pydantic models in `models.py`, so the document and the validation cannot
drift apart; responses are described by hand, with every status a route can answer.
"""

from __future__ import annotations

from typing import Any

from aarmor import __version__
from aarmor.server.models import schemas

__all__ = ["openapi_document"]

_ERR = {"$ref": "#/components/responses/Error"}
_OBJ: dict[str, Any] = {"type": "object"}
#: a body of JSON lines: at least one non-blank character
_LINES: dict[str, Any] = {"type": "string", "pattern": "\\S"}
_APPROVAL_STATUSES = ["pending", "approved", "denied", "expired", "consumed", "abandoned", "all"]
_DEFERRAL_STATUSES = ["pending", "resolved", "expired", "abandoned", "all"]
_ACTION_STATUSES = ["evaluating", "pending_approval", "deferred", "allowed", "denied", "completed",
                    "outcome_unknown", "error"]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _links(response: dict[str, Any], param: str, source: str, op_ids: tuple[str, ...]) -> dict[str, Any]:
    """OpenAPI links: the id in this response feeds `param` of the operations named."""
    return {**response, "links": {op: {"operationId": op, "parameters": {param: source}} for op in op_ids}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _op(op_id: str, summary: str, roles: str, ok: dict[str, dict[str, Any]], *, body: str | None = None,
        errors: tuple[int, ...] = (), params: list[dict[str, Any]] | None = None,
        raw_body: dict[str, Any] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {str(k): v for k, v in ok.items()}
    for code in (401, 403, 413, 429, 503, *errors):
        responses.setdefault(str(code), _ERR)
    if body is not None or raw_body is not None:
        responses.setdefault("400", _ERR)
        responses.setdefault("422", _ERR)
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "description": f"Roles: {roles}.",
                          "security": [{"bearer": []}], "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if raw_body is not None:
        op["requestBody"] = raw_body
    return op


def _components() -> dict[str, Any]:
    error = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
    action = {"type": "object", "required": ["action_id", "session_id", "status"], "properties": {
        "action_id": {"type": "string"}, "session_id": {"type": "string"},
        "status": {"type": "string", "enum": _ACTION_STATUSES},
        "decision": {"type": ["object", "null"]}, "parameters": {"type": ["object", "null"]},
        "modified": {"type": "boolean"}, "receipt_id": {"type": ["string", "null"]},
        "approval_id": {"type": "string"}, "deferral_id": {"type": "string"},
        "deadline": {"type": ["string", "null"]}, "outcome_deadline": {"type": ["string", "null"]},
        "error": {"type": "string"},
        "credential": {"type": "object", "description": "AARM R9: the credential to run the tool with "
                       "(status `allowed` only): the receipt's description plus `token` or `dsn`"}}}
    item = {"type": "object", "required": ["id", "kind", "status", "session_id", "action_id"], "properties": {
        "id": {"type": "string"}, "kind": {"type": "string", "enum": ["approval", "deferral"]},
        "status": {"type": "string"}, "session_id": {"type": "string"}, "action_id": {"type": "string"},
        "deadline": {"type": "string"}, "request": {"type": "object"}}}
    report = {"type": "object", "required": ["ok", "checked", "failures"], "properties": {
        "ok": {"type": "boolean"}, "checked": {"type": "integer"}, "sessions": {"type": "integer"},
        "failures": {"type": "array", "items": _OBJ}}}
    out = schemas()
    revocation = {"type": "object", "required": ["kind", "value", "reason", "revoked_by", "revoked_at", "until"],
                  "properties": {"kind": {"type": "string"}, "value": {"type": "string"},
                                 "reason": {"type": "string"}, "revoked_by": {"type": "string"},
                                 "revoked_at": {"type": "string"}, "until": {"type": ["string", "null"]},
                                 "in_force": {"type": "boolean"}}}
    out.update({"Error": error, "Action": action, "Item": item, "VerificationReport": report,
                "Revocation": revocation,
                "Decision": {"type": "object", "required": ["result", "reason", "policy"],
                             "properties": {"result": {"type": "string"}, "reason": {"type": "string"},
                                            "policy": _OBJ}}})
    return {
        "schemas": out,
        "responses": {"Error": _json(_ref("Error"), "an error: `{\"error\": {\"code\", \"message\"}}`")},
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "aat_...",
                                       "description": "a token from `aarmor tokens create NAME --role ROLE`"}},
    }


def _paths() -> dict[str, Any]:
    sid = _path("sid", "session id")
    aid = _path("aid", "action id (act_...)")
    iid = _path("id", "item id")
    action_ok = {"200": _json(_ref("Action"), "the action reached a terminal status (allowed, denied, ...)"),
                 "202": _json(_ref("Action"), "the action waits for an approval, a deferral or its decision")}
    action_ok = {k: _links(v, "aid", "$response.body#/action_id", ("getAction", "reportOutcome"))
                 for k, v in action_ok.items()}
    items = {"type": "array", "items": _ref("Item")}
    health = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    return {
        "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness (no auth, no data)", "security": [],
                             "responses": {"200": _json(health, "the process is up")}}},
        "/readyz": {"get": {"operationId": "readyz", "summary": "Readiness: store reachable, policy loaded",
                            "security": [], "responses": {"200": _json(health, "ready"),
                                                           "503": _json(health, "not ready")}}},
        "/v1/sessions": {"post": _op(
            "createSession", "Start an agent session", "agent",
            {"201": _links(_json({"type": "object", "required": ["session_id"],
                                  "properties": {"session_id": {"type": "string"}}}, "the session"),
                           "sid", "$response.body#/session_id",
                           ("evaluate", "mediate", "updateContext", "closeSession", "delegate"))},
            body="SessionIn", errors=(409,))},
        "/v1/sessions/{sid}/evaluate": {"post": _op(
            "evaluate", "Dry run: the decision this call would get now (records nothing)", "agent",
            {"200": _json(_ref("Decision"), "the decision")}, body="EvaluateIn", errors=(404, 409), params=[sid])},
        "/v1/sessions/{sid}/actions": {"post": _op(
            "mediate", "Mediate one action; execute it only when the status is `allowed`", "agent", action_ok,
            body="ActionIn", errors=(404, 409), params=[sid])},
        "/v1/sessions/{sid}/context": {"post": _op(
            "updateContext", "Set context fields (wakes this session's deferrals)", "agent",
            {"200": _json(_OBJ, "the fields were recorded")}, body="ContextIn", errors=(404, 409), params=[sid])},
        "/v1/sessions/{sid}/close": {"post": _op(
            "closeSession", "End the session", "agent", {"200": _json(_OBJ, "closed")}, errors=(404, 409),
            params=[sid])},
        "/v1/sessions/{sid}/delegations": {"post": _op(
            "delegate", "Delegate a scope of this session's identity to a sub-agent (a signed chain)", "agent",
            {"201": _json({"type": "object", "required": ["chain", "link_id", "scope", "expires_at"],
                           "properties": {"chain": {"type": "array", "items": {"type": "string"}},
                                          "link_id": {"type": "string"},
                                          "scope": {"type": "array", "items": {"type": "string"}},
                                          "expires_at": {"type": ["string", "null"]}}},
                          "the chain to hand to the sub-agent (`identity.delegation` of its session)")},
            body="DelegateIn", errors=(404, 409), params=[sid])},
        "/v1/actions/{aid}": {"get": _op(
            "getAction", "The current state of a mediated action", "agent (its creator)",
            {"200": _json(_ref("Action"), "the action")}, errors=(404, 422),
            params=[aid, _query("wait", {"type": "number", "minimum": 0, "maximum": 60},
                                "long-poll up to this many seconds for a terminal status")])},
        "/v1/actions/{aid}/outcome": {"post": _op(
            "reportOutcome", "Report what happened when the client ran the allowed action", "agent (its creator)",
            {"200": _json(_ref("Action"), "the outcome is recorded in the receipt")}, body="OutcomeIn",
            errors=(404, 409), params=[aid])},
        "/v1/approvals": {"get": _op(
            "listApprovals", "Approvals (default: pending)", "approver",
            {"200": _json({"type": "object", "properties": {"approvals": items}}, "approvals")}, errors=(422,),
            params=[_query("status", {"type": "string", "enum": _APPROVAL_STATUSES}, "filter (all: every one)"),
                    _query("session_id", {"type": "string"}, "only this session")])},
        "/v1/approvals/{id}": {"get": _op(
            "getApproval", "One approval with its full context", "approver",
            {"200": _json(_ref("Item"), "the approval")}, errors=(404,), params=[iid])},
        "/v1/approvals/{id}/approve": {"post": _op(
            "approve", "Grant a pending approval (recorded under the token's name)", "approver",
            {"200": _json(_ref("Item"), "the decided approval")}, body="DecideIn", errors=(404, 409), params=[iid])},
        "/v1/approvals/{id}/deny": {"post": _op(
            "deny", "Deny a pending approval", "approver",
            {"200": _json(_ref("Item"), "the decided approval")}, body="DecideIn", errors=(404, 409), params=[iid])},
        "/v1/deferrals": {"get": _op(
            "listDeferrals", "Deferrals (default: pending)", "approver, agent (own sessions)",
            {"200": _json({"type": "object", "properties": {"deferrals": items}}, "deferrals")}, errors=(422,),
            params=[_query("status", {"type": "string", "enum": _DEFERRAL_STATUSES}, "filter (all: every one)"),
                    _query("session_id", {"type": "string"}, "only this session")])},
        "/v1/deferrals/{id}": {"get": _op(
            "getDeferral", "One deferral", "approver, agent (own sessions)",
            {"200": _json(_ref("Item"), "the deferral")}, errors=(404,), params=[iid])},
        "/v1/deferrals/{id}/resolve": {"post": _op(
            "resolveDeferral", "Supply the context a deferral needs (the PDP re-evaluates)",
            "approver, agent (own sessions)", {"200": _json(_ref("Item"), "the deferral")}, body="SupplyIn",
            errors=(404, 409), params=[iid])},
        "/v1/receipts": {"get": _op(
            "listReceipts", "Signed receipts, paged (JSON, or JSON lines with format=jsonl)", "approver",
            {"200": {"description": "receipts", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "receipts": {"type": "array", "items": _OBJ},
                    "next_offset": {"type": ["integer", "null"]}}}},
                "application/x-ndjson": {"schema": {"type": "string"}}}}}, errors=(422,),
            params=[_query("session_id", {"type": "string"}, "only this session"),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, "skip this many"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (100)"),
                    _query("format", {"type": "string", "enum": ["json", "jsonl"]}, "json (default) or jsonl")])},
        "/v1/receipts/verify": {"post": _op(
            "verifyReceipts", "Verify receipts (JSON lines) against this server's public keys", "approver",
            {"200": _json(_ref("VerificationReport"), "the verification report")}, raw_body={
                "required": True, "content": {"application/x-ndjson": {"schema": _LINES},
                                              "text/plain": {"schema": _LINES}}})},
        "/v1/receipts/{id}": {"get": _op(
            "getReceipt", "One signed receipt", "approver", {"200": _json(_OBJ, "the receipt")}, errors=(404,),
            params=[iid])},
        "/v1/keys": {"get": _op(
            "publicKeys", "The receipt verification keys (JWKS)", "any role",
            {"200": _json(_OBJ, "JWKS")})},
        **_revocation_paths(),
    }


def _revocation_paths() -> dict[str, Any]:
    """Identity revocations (docs/identity.md "Revocation"): admin only."""
    from aarmor.identity.revocation import MAX_REASON, MAX_VALUE, REVOCATION_KINDS, VALUE_PATTERN
    from aarmor.server.models import REASON_PATTERN

    one = _json({"type": "object", "required": ["revocation", "created"], "properties": {
        "revocation": _ref("Revocation"), "created": {"type": "boolean"}}}, "the revocation in force")
    kind = {"name": "kind", "in": "path", "required": True, "description": "token, subject or agent",
            "schema": {"type": "string", "enum": list(REVOCATION_KINDS)}}
    value = {"name": "value", "in": "path", "required": True, "description": "the revoked value (may hold `/`)",
             "schema": {"type": "string", "minLength": 1, "maxLength": MAX_VALUE, "pattern": VALUE_PATTERN}}
    reason = _query("reason", {"type": "string", "minLength": 1, "maxLength": MAX_REASON,
                               "pattern": REASON_PATTERN}, "why (kept in the revocation history)")
    return {
        "/v1/identity/revocations": {
            "post": _op("revokeIdentity", "Revoke a token id, subject or agent (in force from the next decision)",
                        "admin", {"201": one, "200": one}, body="RevocationIn", errors=(409,)),
            "get": _op("listRevocations", "Identity revocations (default: those in force)", "admin",
                       {"200": _json({"type": "object", "required": ["revocations"], "properties": {
                           "revocations": {"type": "array", "items": _ref("Revocation")}}}, "revocations")},
                       errors=(422,), params=[_query("status", {"type": "string", "enum": ["in_force", "all"]},
                                                     "in_force (default) or all (also those whose `until` passed)")]),
        },
        "/v1/identity/revocations/history": {"get": _op(
            "revocationHistory", "Every revoke and unrevoke, oldest first", "admin",
            {"200": _json({"type": "object", "required": ["events"], "properties": {
                "events": {"type": "array", "items": _OBJ}}}, "the history")})},
        "/v1/identity/revocations/{kind}/{value}": {"delete": _op(
            "unrevokeIdentity", "Lift a revocation (recorded in the history)", "admin",
            {"200": _json({"type": "object", "required": ["unrevoked"], "properties": {
                "unrevoked": _ref("Revocation")}}, "the revocation that was lifted")},
            errors=(404, 422), params=[kind, value, reason])},
    }


def openapi_document(server_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "aarmor HTTP API", "version": __version__,
                 "description": "Mediation, approvals, deferrals and receipts of an aarmor runtime. "
                                "See docs/http-api.md."},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": _components(),
    }
