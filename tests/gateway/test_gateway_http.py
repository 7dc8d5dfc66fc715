"""The gateway's Streamable HTTP front: bearer tokens name the identity, a session answers only to the
credential that opened it, and the original request arrives in a header at initialize."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

from tests.mcp_support import everything_server_argv

from .conftest import GatewaySetup, upstream

POLICY = """
policy: {id: http-gateway, version: "1", default: DENY}
rules:
  - id: echo-only-when-asked
    match: {tool: echo, original_request: {not_contains: [echo]}}
    action: DENY
    priority: 100
    reason: the user did not ask for an echo
  - id: the-rest
    match: {tool: "*"}
    action: ALLOW
"""

ALICE, BOB = "alice-secret-token", "bob-secret-token"


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _setup(gw: GatewaySetup) -> None:
    gw.write(policy=POLICY, gateway={
        "upstreams": {"everything": upstream(everything_server_argv())},
        "tokens": [{"sha256": _sha(ALICE), "identity": {"human": "alice@company.com", "agent": "bot"}},
                   {"sha256": _sha(BOB), "identity": {"human": "bob@company.com"}}]})


async def _call(url: str, token: str | None, request: str | None, tool: str, args: dict[str, Any]) -> Any:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if request:
        headers["X-Aarmor-Original-Request"] = urllib.parse.quote(request)
    async with create_mcp_http_client(headers=headers) as http, \
            streamable_http_client(url, http_client=http) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        return await s.call_tool(tool, args)


def test_tokens_name_the_identity_and_the_original_request_reaches_policy(
        gw: GatewaySetup, http_gateway: Callable[..., str]) -> None:
    _setup(gw)
    url = http_gateway()
    asked = asyncio.run(_call(url, ALICE, "please echo hello back to me", "echo", {"message": "hello"}))
    not_asked = asyncio.run(_call(url, BOB, "what time is it?", "echo", {"message": "hello"}))
    assert not asked.is_error and "hello" in asked.content[0].text
    assert not_asked.is_error and "did not ask for an echo" in not_asked.content[0].text
    receipts = gw.receipts()
    assert [(r.human, r.decision) for r in receipts] == [("alice@company.com", "ALLOW"),
                                                         ("bob@company.com", "DENY")]
    assert receipts[0].body["action"]["requester_context"]["agent"] == "bot"


def test_no_token_or_an_unknown_one_is_refused_and_sessions_belong_to_their_credential(
        gw: GatewaySetup, http_gateway: Callable[..., str]) -> None:
    _setup(gw)
    url = http_gateway()
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(timeout=20) as c:
        assert c.post(url, json=init, headers=accept).status_code == 401
        assert c.post(url, json=init, headers={**accept, "Authorization": "Bearer nope"}).status_code == 401
        opened = c.post(url, json=init, headers={**accept, "Authorization": f"Bearer {ALICE}"})
        assert opened.status_code == 200, opened.text
        sid = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        stolen = c.post(url, json=listing, headers={**accept, "Authorization": f"Bearer {BOB}",
                                                    "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
        assert stolen.status_code == 404
        # a request that does not open with initialize creates no session
        stray = c.post(url, json=listing, headers={**accept, "Authorization": f"Bearer {ALICE}"})
        assert stray.status_code == 400 and "initialize" in stray.text
    assert gw.receipts() == []  # nothing was called
