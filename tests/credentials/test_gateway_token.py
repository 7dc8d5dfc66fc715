"""The MCP gateway forwards a tool's access token in `params._meta["aarmor/credential"]`; a real tool server
process (tests/credentials/token_checking_server.py) verifies it against the arguments it received."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.gateway.conftest import GatewaySetup

SERVER = Path(__file__).with_name("token_checking_server.py")
POLICY = """
policy: {id: pay, version: "1", default: ALLOW}
rules:
  - id: cap
    match: {tool: charge, parameters: {amount: {gt: 100}}}
    action: MODIFY
    modifications: {parameters: {amount: 100}}
    reason: charges are capped at 100
"""


def test_the_tool_server_receives_and_verifies_its_token(tmp_path: Path) -> None:
    gw = GatewaySetup(tmp_path)
    keys = tmp_path / "keys" / "credentials"
    gw.write(policy=POLICY, gateway={
        "principal": {"human": "alice@company.com"},
        "upstreams": {"pay": {"command": sys.executable, "args": [str(SERVER), str(keys), "payments"]}}},
        tools={"charge": {"operation": "write"}},
        credentials={"tools": {"charge": {"kind": "access_token", "audience": "payments"}}})

    async def run() -> list[dict[str, Any]]:
        async with gw.client() as s:
            out = []
            for amount in (20, 5000):
                res = await s.call_tool("charge", {"amount": amount})
                out.append(json.loads(res.content[0].text))
            return out

    small, capped = asyncio.run(run())
    # verified by the server, bound to the arguments it received (after MODIFY: the capped amount)
    assert small["verified"] and capped["verified"], (small, capped)
    assert small["sub"] == "alice@company.com" and small["scope"] == ["write"] and small["jti"] != capped["jti"]
    receipts = gw.receipts()
    assert [r.body["execution"]["credential"]["credential_id"] for r in receipts] == [small["jti"], capped["jti"]]
