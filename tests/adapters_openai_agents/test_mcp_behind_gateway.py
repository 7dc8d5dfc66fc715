"""The Agents SDK's own MCP client (`agents.mcp.MCPServerStdio`) pointed at `aarmor gateway` (a real subprocess)
fronting the real `mcp-server-time` (PyPI): MCP tools are mediated by the gateway, not by `AgentsDoor`.
The agent's model is `agents.testing.ScriptedModel` standing in for an LLM (see conftest.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agents import Agent, Runner
from agents.mcp import MCPServerStdio
from agents.testing import ScriptedModel, assistant_message, function_call

from tests.gateway.conftest import AARMOR, GatewaySetup, upstream
from tests.mcp_support import time_server_argv

from .conftest import tool_outputs

POLICY = """
policy: {id: time-gateway, version: "1", default: DENY}
rules:
  - id: reading-the-clock-is-fine
    match: {tool: get_current_time}
    action: ALLOW
  - id: no-conversions
    match: {tool: convert_time}
    action: DENY
    reason: time conversion is not allowed for this agent
"""


def test_agents_sdk_mcp_client_through_the_gateway_lists_and_calls_allowed_and_denied(tmp_path: Path) -> None:
    gw = GatewaySetup(tmp_path).write(policy=POLICY, gateway={
        "principal": {"human": "alice@company.com", "agent": "support-bot"},
        "upstreams": {"time": upstream(time_server_argv("UTC"))}})
    server = MCPServerStdio(
        params={"command": AARMOR, "args": ["gateway", "--config", str(gw.config)], "env": gw.env},
        name="time-via-aarmor", client_session_timeout_seconds=60)
    model = ScriptedModel([
        [function_call("get_current_time", {"timezone": "UTC"}, call_id="c-allow"),
         function_call("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                        "target_timezone": "Asia/Tokyo"}, call_id="c-deny")],
        [assistant_message("done")],
    ])

    async def main() -> tuple[list[str], Any, Any]:
        async with server:
            names = [t.name for t in await server.list_tools()]
            direct_ok = await server.call_tool("get_current_time", {"timezone": "UTC"})
            direct_denied = await server.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                                   "target_timezone": "Asia/Tokyo"})
            agent = Agent(name="support-bot", model=model, mcp_servers=[server])
            await Runner.run(agent, "what time is it, and in Tokyo?")
            return names, direct_ok, direct_denied

    names, ok, denied = asyncio.run(main())
    assert {"get_current_time", "convert_time"} <= set(names)
    assert not ok.is_error and '"timezone": "UTC"' in ok.content[0].text
    assert denied.is_error and "time conversion is not allowed for this agent" in denied.content[0].text
    # in the agent loop, the model reads the real time, and the gateway's denial with its receipt id
    out = tool_outputs(model.calls[1])
    assert '"timezone": "UTC"' in out["c-allow"]
    assert "time conversion is not allowed for this agent" in out["c-deny"]
    rs = gw.receipts()  # verified offline
    assert [(r.tool, r.decision) for r in rs[:2]] == [("get_current_time", "ALLOW"), ("convert_time", "DENY")]
    # the agent loop ran its two calls concurrently: either may have been recorded first
    assert sorted((r.tool, r.decision) for r in rs[2:]) == [("convert_time", "DENY"), ("get_current_time", "ALLOW")]
    [loop_denial] = [r for r in rs[2:] if r.decision == "DENY"]
    assert loop_denial.receipt_id in out["c-deny"]
