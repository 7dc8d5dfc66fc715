"""The JSON API under `/v1` (docs/http-api.md): sessions, mediation, approvals, deferrals, receipts.

Rules:
- Each handler authenticates first (`require`), then validates its body, then calls the guard, the
  session registry, the action runner or a desk; store and desk calls run in the thread pool, never on
  the event loop.
- Roles: agent (sessions, evaluate, actions, context, deferral resolve), approver (approvals, deferrals,
  receipts), admin (everything; identity revocations only). An approver's decision is recorded under the
  token's name, channel "api"; so is the author of a revocation.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from aarmor.canonical import format_ts
from aarmor.identity import IdentityError
from aarmor.identity.delegation import DelegationError, links_from_tokens
from aarmor.identity.mtls import CertificateError, PeerCertificate, client_certificate
from aarmor.server.actions import TERMINAL, ActionHandle, Outcome
from aarmor.server.desks import approvals, deferrals
from aarmor.server.http import ApiError, dumps_line, json_response, read_body, read_model, require
from aarmor.server.models import (
    ActionIn,
    ContextIn,
    DecideIn,
    DelegateIn,
    EvaluateIn,
    OutcomeIn,
    RevocationIn,
    SessionIn,
    SupplyIn,
)

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.server.app import ServerState

__all__ = ["APPROVAL_STATUSES", "DEFERRAL_STATUSES", "routes"]

APPROVAL_STATUSES = ("pending", "approved", "denied", "expired", "consumed", "abandoned", "all")
DEFERRAL_STATUSES = ("pending", "resolved", "expired", "abandoned", "all")
#: how long a new action may take to reach a decision before POST answers 202 `evaluating`
DECISION_WAIT = 10.0
POLL = 0.1


def _state(request: Request) -> ServerState:
    st: ServerState = request.app.state.aarmor
    return st


def _limit(request: Request) -> int:
    limits = _state(request).guard.config.limits
    return limits.max_argument_bytes + 4 * limits.max_request_chars + 65536


def _param(request: Request, name: str) -> str:
    return str(request.path_params[name])


def _peer(request: Request) -> PeerCertificate | None:
    """The connection's verified client certificate (`server.tls.client_ca`; docs/identity.md).

    Raises:
        ApiError: 403 `client_certificate`: none although required, or no usable service name in it.
    """
    try:
        return client_certificate(request.scope, _state(request).guard.config.server.tls)
    except CertificateError as exc:
        raise ApiError(403, "client_certificate", str(exc)) from exc


# --- sessions -------------------------------------------------------------------------------------------
async def create_session(request: Request) -> Response:
    tok = await require(request, "agent")
    body = await read_model(request, SessionIn, limit=_limit(request))
    session = await run_in_threadpool(_state(request).sessions.create, tok, body, _peer(request))
    return json_response({"session_id": session.session_id}, 201)


async def evaluate(request: Request) -> Response:
    tok = await require(request, "agent")
    body = await read_model(request, EvaluateIn, limit=_limit(request))
    st = _state(request)
    session = await run_in_threadpool(st.sessions.get, _param(request, "sid"), tok, _peer(request))
    decision = await run_in_threadpool(session.evaluate, body.tool, body.arguments, operation=body.operation)
    return json_response(decision.to_json())


async def update_context(request: Request) -> Response:
    tok = await require(request, "agent")
    body = await read_model(request, ContextIn, limit=_limit(request))
    st = _state(request)
    session = await run_in_threadpool(st.sessions.get, _param(request, "sid"), tok, _peer(request))
    await run_in_threadpool(lambda: session.update_context(**body.fields))
    return json_response({"session_id": session.session_id, "updated": sorted(body.fields)})


async def delegate(request: Request) -> Response:
    """Sign a delegation from this session's (verified) identity to a sub-agent (docs/identity.md)."""
    tok = await require(request, "agent")
    body = await read_model(request, DelegateIn, limit=_limit(request))
    st = _state(request)
    session = await run_in_threadpool(st.sessions.get, _param(request, "sid"), tok, _peer(request))
    try:
        chain = await run_in_threadpool(session.delegate, body.to, body.scope, ttl=body.ttl)
    except DelegationError as exc:  # what this identity may not hand over: forbidden, whatever the detail
        raise ApiError(403, exc.code, str(exc)) from exc
    except IdentityError as exc:
        raise ApiError(403, "identity_refused", str(exc)) from exc
    link = links_from_tokens(chain[-1:])[0]
    return json_response({"chain": list(chain), "link_id": link.link_id, "scope": list(link.scope),
                          "expires_at": format_ts(link.expires_at) if link.expires_at else None}, 201)


async def close_session(request: Request) -> Response:
    tok = await require(request, "agent")
    await run_in_threadpool(_state(request).sessions.close, _param(request, "sid"), tok, _peer(request))
    return json_response({"session_id": _param(request, "sid"), "closed": True})


# --- mediation ------------------------------------------------------------------------------------------
async def _settle(st: ServerState, h: ActionHandle, wait: float) -> dict[str, Any]:
    """The action's view once it has a decision, long-polling up to `wait` s for a terminal status."""
    start = time.monotonic()
    while True:
        view = await run_in_threadpool(st.actions.view, h)
        waited = time.monotonic() - start
        if view["status"] in TERMINAL:
            return view
        if view["status"] != "evaluating" and waited >= wait:
            return view
        if waited >= max(wait, DECISION_WAIT):
            return view
        await asyncio.sleep(POLL)


async def start_action(request: Request) -> Response:
    tok = await require(request, "agent")
    body = await read_model(request, ActionIn, limit=_limit(request))
    st = _state(request)
    session = await run_in_threadpool(st.sessions.get, _param(request, "sid"), tok, _peer(request))
    h = st.actions.start(session, tok, body.tool, body.arguments, body.operation, tuple(body.depends_on))
    view = await _settle(st, h, body.wait)
    return json_response(view, 200 if view["status"] in TERMINAL else 202,
                         {"Location": f"/v1/actions/{h.action_id}"})


async def get_action(request: Request) -> Response:
    tok = await require(request, "agent")
    st = _state(request)
    h = st.actions.get(_param(request, "aid"), tok)
    wait = _float_query(request, "wait", 0.0, 60.0)
    view = await _settle(st, h, wait) if wait > 0 else await run_in_threadpool(st.actions.view, h)
    return json_response(view)


async def report_outcome(request: Request) -> Response:
    tok = await require(request, "agent")
    body = await read_model(request, OutcomeIn, limit=_limit(request))
    st = _state(request)
    h = st.actions.get(_param(request, "aid"), tok)
    st.actions.report(h, Outcome(body.success, body.output, body.error))
    await run_in_threadpool(st.actions.wait_finished, h, 10.0)
    return json_response(await run_in_threadpool(st.actions.view, h))


# --- approvals and deferrals ----------------------------------------------------------------------------
def _status_query(request: Request, allowed: tuple[str, ...]) -> str | None:
    status = request.query_params.get("status", "pending")
    if status not in allowed:
        raise ApiError(422, "invalid", f"status `{status}` is not one of {', '.join(allowed)}")
    return None if status == "all" else status


def _float_query(request: Request, name: str, default: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ApiError(422, "invalid", f"`{name}` must be a number, found `{raw}`") from exc
    if not 0 <= value <= high:
        raise ApiError(422, "invalid", f"`{name}` must be between 0 and {high:g}")
    return value


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(422, "invalid", f"`{name}` must be an integer, found `{raw}`") from exc
    if not low <= value <= high:
        raise ApiError(422, "invalid", f"`{name}` must be between {low} and {high}")
    return value


async def list_approvals(request: Request) -> Response:
    await require(request, "approver")
    status = _status_query(request, APPROVAL_STATUSES)
    sid = request.query_params.get("session_id")
    items = await run_in_threadpool(lambda: approvals(_state(request).guard).list(status=status, session_id=sid))
    return json_response({"approvals": items})


async def get_approval(request: Request) -> Response:
    await require(request, "approver")
    item = await run_in_threadpool(approvals(_state(request).guard).get, _param(request, "id"))
    return json_response(item)


async def _decide(request: Request, granted: bool) -> Response:
    tok = await require(request, "approver")
    body = await read_model(request, DecideIn, limit=16384)
    desk = approvals(_state(request).guard)
    item = await run_in_threadpool(lambda: desk.decide(_param(request, "id"), approver=tok.name, granted=granted,
                                                       reason=body.reason, channel="api"))
    return json_response(item)


async def approve(request: Request) -> Response:
    return await _decide(request, True)


async def deny(request: Request) -> Response:
    return await _decide(request, False)


async def _deferral_visible(st: ServerState, tok: Any, item: dict[str, Any]) -> None:
    if tok.role == "agent":
        owner = await run_in_threadpool(st.sessions.owner, str(item.get("session_id")))
        if owner != tok.name:
            raise ApiError(403, "not_owner", f"deferral `{item.get('id')}` is in another principal's session")


async def list_deferrals(request: Request) -> Response:
    tok = await require(request, "approver", "agent")
    status = _status_query(request, DEFERRAL_STATUSES)
    sid = request.query_params.get("session_id")
    st = _state(request)
    items = await run_in_threadpool(lambda: deferrals(st.guard).list(status=status, session_id=sid))
    if tok.role == "agent":
        owners = {s: await run_in_threadpool(st.sessions.owner, s) for s in {str(i.get("session_id")) for i in items}}
        items = [i for i in items if owners.get(str(i.get("session_id"))) == tok.name]
    return json_response({"deferrals": items})


async def get_deferral(request: Request) -> Response:
    tok = await require(request, "approver", "agent")
    st = _state(request)
    item = await run_in_threadpool(deferrals(st.guard).get, _param(request, "id"))
    await _deferral_visible(st, tok, item)
    return json_response(item)


async def resolve_deferral(request: Request) -> Response:
    tok = await require(request, "approver", "agent")
    body = await read_model(request, SupplyIn, limit=_limit(request))
    st = _state(request)
    desk = deferrals(st.guard)
    item = await run_in_threadpool(desk.get, _param(request, "id"))
    await _deferral_visible(st, tok, item)
    item = await run_in_threadpool(lambda: desk.supply(_param(request, "id"), body.fields, by=tok.name,
                                                       channel="api"))
    return json_response(item)


# --- receipts -------------------------------------------------------------------------------------------
async def list_receipts(request: Request) -> Response:
    await require(request, "approver")
    sid = request.query_params.get("session_id")
    offset = _int_query(request, "offset", 0, 0, 10**9)
    limit = _int_query(request, "limit", 100, 1, 1000)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "jsonl"):
        raise ApiError(422, "invalid", f"format `{fmt}` is not one of json, jsonl")
    store = _state(request).guard.store

    def page() -> list[dict[str, Any]]:
        return [r.body for r in itertools.islice(store.read_receipts(sid), offset, offset + limit + 1)]

    bodies = await run_in_threadpool(page)
    more = len(bodies) > limit
    bodies = bodies[:limit]
    if fmt == "jsonl":
        headers = {"X-Next-Offset": str(offset + limit)} if more else {}
        return PlainTextResponse("".join(dumps_line(b) + "\n" for b in bodies), media_type="application/x-ndjson",
                                 headers=headers)
    return json_response({"receipts": bodies, "next_offset": offset + limit if more else None})


async def get_receipt(request: Request) -> Response:
    await require(request, "approver")
    rec = await run_in_threadpool(_state(request).guard.store.get_receipt, _param(request, "id"))
    if rec is None:
        raise ApiError(404, "not_found", f"no receipt `{_param(request, 'id')}`")
    return json_response(rec.body)


async def verify_receipts(request: Request) -> Response:
    await require(request, "approver")
    raw = await read_body(request, 64 * 1024 * 1024)
    if not raw.strip():
        raise ApiError(400, "empty", "the body must hold receipts as JSON lines (`aarmor receipts export`)")
    st = _state(request)
    report = await run_in_threadpool(_verify_lines, raw, st.guard.keyring.public_keys())
    return json_response(report)


def _verify_lines(raw: bytes, keys: Any) -> dict[str, Any]:
    """`aarmor receipts verify` over a request body: one failure per unreadable line, then every receipt."""
    from aarmor.canonical import loads_strict
    from aarmor.errors import InputError
    from aarmor.receipts import ReceiptFailure, verify_receipts
    from aarmor.receipts.verify import MALFORMED

    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"receipts must be UTF-8 JSON lines: {exc}") from exc
    bodies: list[Any] = []
    bad: list[ReceiptFailure] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            bodies.append(loads_strict(line))
        except (InputError, RecursionError) as exc:
            bad.append(ReceiptFailure(None, None, None, f"line {n}: {exc}", MALFORMED))
    report = verify_receipts(bodies, keys)
    report.failures[:0] = bad
    report.checked += len(bad)
    return report.to_json()


# --- identity revocations (admin) -----------------------------------------------------------------------
async def revoke_identity(request: Request) -> Response:
    from datetime import UTC, datetime

    from aarmor.canonical import parse_ts
    from aarmor.identity.revocation import revoke

    tok = await require(request, "admin")
    body = await read_model(request, RevocationIn, limit=16384)
    until = None
    if body.until is not None:
        try:
            until = parse_ts(body.until)
        except ValueError as exc:
            raise ApiError(422, "invalid", f"`until`: not an RFC 3339 time with a timezone: {exc}") from exc
    store = _state(request).guard.store
    rev, created = await run_in_threadpool(lambda: revoke(store, body.kind, body.value, reason=body.reason,
                                                          by=tok.name, now=datetime.now(UTC), until=until))
    return json_response({"revocation": rev.to_json(), "created": created}, 201 if created else 200)


async def list_revocations(request: Request) -> Response:
    from datetime import UTC, datetime

    from aarmor.canonical import format_ts

    await require(request, "admin")
    status = request.query_params.get("status", "in_force")
    if status not in ("in_force", "all"):
        raise ApiError(422, "invalid", f"status `{status}` is not one of in_force, all")
    now = format_ts(datetime.now(UTC))
    store = _state(request).guard.store
    revs = await run_in_threadpool(store.revocation_list, now=now if status == "in_force" else None)
    return json_response({"revocations": [{**r.to_json(), "in_force": r.in_force(now)}
                                          for r in revs]})


async def revocations(request: Request) -> Response:
    # one route for both methods, so a 405 on this path names both in its Allow header
    return await (revoke_identity(request) if request.method == "POST" else list_revocations(request))


async def revocation_history(request: Request) -> Response:
    await require(request, "admin")
    events = await run_in_threadpool(_state(request).guard.store.revocation_history)
    return json_response({"events": [e.to_json() for e in events]})


async def unrevoke_identity(request: Request) -> Response:
    from datetime import UTC, datetime

    from aarmor.identity.revocation import unrevoke
    from aarmor.server.models import REASON_PATTERN

    tok = await require(request, "admin")
    reason = request.query_params.get("reason", "no reason given")
    if not 1 <= len(reason) <= 2000 or not re.search(REASON_PATTERN, reason):
        raise ApiError(422, "invalid", "`reason` must be 1-2000 characters, not only white space")
    store = _state(request).guard.store
    lifted = await run_in_threadpool(lambda: unrevoke(store, _param(request, "kind"), _param(request, "value"),
                                                      reason=reason, by=tok.name, now=datetime.now(UTC)))
    return json_response({"unrevoked": lifted.to_json()})


async def public_keys(request: Request) -> Response:
    await require(request, "agent", "approver")
    text = await run_in_threadpool(_state(request).guard.keyring.export_public, "jwks")
    return Response(text, media_type="application/json")


def routes() -> list[Route]:
    return [
        Route("/v1/sessions", create_session, methods=["POST"]),
        Route("/v1/sessions/{sid}/evaluate", evaluate, methods=["POST"]),
        Route("/v1/sessions/{sid}/actions", start_action, methods=["POST"]),
        Route("/v1/sessions/{sid}/context", update_context, methods=["POST"]),
        Route("/v1/sessions/{sid}/close", close_session, methods=["POST"]),
        Route("/v1/sessions/{sid}/delegations", delegate, methods=["POST"]),
        Route("/v1/actions/{aid}", get_action, methods=["GET"]),
        Route("/v1/actions/{aid}/outcome", report_outcome, methods=["POST"]),
        Route("/v1/approvals", list_approvals, methods=["GET"]),
        Route("/v1/approvals/{id}", get_approval, methods=["GET"]),
        Route("/v1/approvals/{id}/approve", approve, methods=["POST"]),
        Route("/v1/approvals/{id}/deny", deny, methods=["POST"]),
        Route("/v1/deferrals", list_deferrals, methods=["GET"]),
        Route("/v1/deferrals/{id}", get_deferral, methods=["GET"]),
        Route("/v1/deferrals/{id}/resolve", resolve_deferral, methods=["POST"]),
        Route("/v1/receipts", list_receipts, methods=["GET"]),
        Route("/v1/receipts/verify", verify_receipts, methods=["POST"]),
        Route("/v1/receipts/{id}", get_receipt, methods=["GET"]),
        Route("/v1/keys", public_keys, methods=["GET"]),
        Route("/v1/identity/revocations", revocations, methods=["GET", "POST"]),
        Route("/v1/identity/revocations/history", revocation_history, methods=["GET"]),
        Route("/v1/identity/revocations/{kind}/{value:path}", unrevoke_identity, methods=["DELETE"]),
    ]
