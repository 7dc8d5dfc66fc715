"""The gateway's HTTP front with identity mode `jwt` and signed delegation chains (AARM R6, threat 9).

A real `aarmor gateway --listen http://...` in front of the real `mcp-server-time`, raw Streamable HTTP with
httpx: the caller's OIDC/JWT bearer token becomes its verified identity (refused at initialize when it does
not verify), and a sub-agent's signed chain arrives in the `X-Aarmor-Delegation` header.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aarmor import Guard, Identity
from tests.identity.conftest import AUDIENCE, ISSUER, Signer
from tests.mcp_support import time_server_argv

from .conftest import GatewaySetup, upstream

POLICY = """
policy: {id: gateway-identity, version: "1", default: DENY}
rules:
  - id: time-needs-the-scope
    match: {tool: "*", identity.effective_scope: {contains: "time:read"}}
    action: ALLOW
    reason: the caller holds time:read
"""
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "get_current_time", "arguments": {"timezone": "UTC"}}}


@pytest.fixture
def signer() -> Signer:
    return Signer("EdDSA", "idp-ed-1")


@pytest.fixture
def url(gw: GatewaySetup, http_gateway: Callable[..., str], signer: Signer) -> str:
    jwks = gw.tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [signer.jwk]}))
    gw.write(policy=POLICY, gateway={"upstreams": {"time": upstream(time_server_argv())},
                                     "principal": {"agent": "researcher"}},
             identity={"mode": "jwt", "jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)}})
    return http_gateway()


def _call(c: httpx.Client, url: str, headers: dict[str, str]) -> tuple[httpx.Response, dict[str, Any] | None]:
    r = c.post(url, json=INIT, headers={**ACCEPT, **headers})
    if r.status_code != 200:
        return r, None
    h = {**ACCEPT, **headers, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    assert c.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h).status_code == 202
    answer = c.post(url, json=CALL, headers=h)
    assert answer.status_code == 200, answer.text
    return r, answer.json()["result"]


def test_a_bearer_token_is_the_callers_verified_identity(gw: GatewaySetup, url: str, signer: Signer) -> None:
    with httpx.Client(timeout=30) as c:
        r, _ = _call(c, url, {})
        assert r.status_code == 401 and "a bearer token is required" in r.text
        expired = signer.token(iat=1_700_000_000, exp=1_700_000_600)
        r, _ = _call(c, url, {"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and "identity token expired" in r.text and expired not in r.text
        other = Signer("EdDSA", "idp-ed-1").token()  # same kid, another key
        r, _ = _call(c, url, {"Authorization": f"Bearer {other}"})
        assert r.status_code == 401 and "bad signature" in r.text
        token = signer.token(scope="time:read", jti="tok-123")
        r, result = _call(c, url, {"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and result is not None and not result.get("isError"), result
        # a token without the scope: the session opens, the policy refuses the call
        _, refused = _call(c, url, {"Authorization": f"Bearer {signer.token(scope='mail:send')}"})
        assert refused is not None and refused["isError"] is True
    allowed, denied = gw.receipts()[-2:]
    rc = allowed.body["action"]["requester_context"]
    assert rc["human"] == "alice@company.com" and rc["agent"] == "researcher"
    assert rc["verified_by"] == "jwt" and rc["token_id"] == "tok-123" and rc["scope"] == ["time:read"]
    assert denied.body["enforcement"]["result"] == "DENY"
    assert token.rsplit(".", 1)[1].encode() not in (gw.tmp / "aarmor.db").read_bytes()


def test_a_signed_delegation_chain_in_the_header_narrows_the_scope(gw: GatewaySetup, url: str,
                                                                   signer: Signer) -> None:
    # the orchestrator runs in-process with the same keys (a second node of the same installation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard.open(gw.config)
    try:
        orchestrator = Identity(agent="orchestrator", token=signer.token(scope="time:read mail:send"))
        with guard.session(identity=orchestrator, original_request="What time is it in UTC?") as s:
            narrow = s.delegate("researcher", ["time:read"])
            mail_only = s.delegate("researcher", ["mail:send"])
    finally:
        guard.close()
    token = {"Authorization": f"Bearer {signer.token(scope='time:read mail:send')}"}
    with httpx.Client(timeout=30) as c:
        _, ok = _call(c, url, {**token, "X-Aarmor-Delegation": ",".join(narrow)})
        _, refused = _call(c, url, {**token, "X-Aarmor-Delegation": ",".join(mail_only)})
        r = c.post(url, json=INIT, headers={**ACCEPT, **token, "X-Aarmor-Delegation": "not-a-token"})
    assert ok is not None and not ok.get("isError"), ok
    assert refused is not None and refused["isError"] is True
    # a malformed chain: initialize answers with a JSON-RPC error (and the session is dropped)
    assert "delegation malformed" in r.json()["error"]["message"]
    receipts = gw.receipts()
    ok_r, refused_r = receipts[-2:]
    rc = ok_r.body["action"]["requester_context"]
    assert rc["effective_scope"] == ["time:read"] and rc["delegation_chain"][0]["delegator"] == "orchestrator"
    assert refused_r.body["action"]["requester_context"]["effective_scope"] == ["mail:send"]
