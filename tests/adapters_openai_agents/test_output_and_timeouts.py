"""Output redaction (`redact_output`) through both ways in, and the SDK's own tool timeout cutting an aarmor
wait short. The model is `agents.testing.ScriptedModel` standing in for an LLM (see conftest.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, FunctionTool, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from aarmor import Identity
from aarmor.adapters.openai_agents import AgentsDoor

from .conftest import receipts, tool_outputs

POLICY = """
policy: {id: agents-output, version: "1", default: ALLOW}
rules:
  - id: scrub-crm
    match: {tool: crm_lookup}
    action: MODIFY
    modifications: {redact_output: [PII]}
    reason: the agent does not need contact details
  - id: refunds-need-finance
    match: {tool: refund}
    action: STEP_UP
    approvers: [finance]
    timeout: 300
    reason: refunds need a finance approval
"""

ALICE = Identity(human="alice@company.com", agent="support-bot")


def _crm() -> FunctionTool:
    @function_tool
    def crm_lookup(customer: str) -> str:
        """Look a customer up."""
        return f"{customer}: contact bob.smith@example.org, tier gold"

    return crm_lookup


@pytest.mark.parametrize("way", ["wrapper", "guardrails"])
def test_redact_output_reaches_the_model_redacted(make_guard: Any, tmp_path: Path, way: str) -> None:
    guard = make_guard(POLICY)
    door = AgentsDoor(guard, identity=ALICE)
    model = ScriptedModel([[function_call("crm_lookup", {"customer": "acme"}, call_id="c1")],
                           [assistant_message("ok")]])
    tools = [door.tool(_crm())] if way == "wrapper" else door.with_guardrails([_crm()])
    asyncio.run(door.run(Agent(name="a", model=model, tools=tools), "who is acme's contact?"))
    text = tool_outputs(model.calls[1])["c1"]
    assert "bob.smith@example.org" not in text
    assert "acme: contact [REDACTED:email], tier gold" in text
    [r] = receipts(guard, tmp_path)  # one action: `door.run` does not wrap a tool the guardrails mediate
    assert r["decision"]["result"] == "MODIFY" and r["execution"]["success"] is True
    assert r["execution"]["output_redaction"]


def test_the_sdk_tool_timeout_ends_an_aarmor_wait_as_a_recorded_deny(make_guard: Any, tmp_path: Path) -> None:
    guard = make_guard(POLICY)  # nobody approves: only the SDK's timeout ends the wait
    ran: list[str] = []

    @function_tool(timeout=0.5)
    async def refund(order: str) -> str:
        """Refund an order."""
        ran.append(order)
        return "refunded"

    door = AgentsDoor(guard, identity=ALICE)
    model = ScriptedModel([[function_call("refund", {"order": "o-1"}, call_id="c1")], [assistant_message("ok")]])
    asyncio.run(Runner.run(door.protect(Agent(name="a", model=model, tools=[refund])), "refund o-1"))
    door.close()
    assert ran == []
    assert "timed out" in tool_outputs(model.calls[1])["c1"]  # the SDK's own timeout text
    [r] = receipts(guard, tmp_path)
    assert r["decision"]["result"] == "STEP_UP" and r["execution"] is None
    assert r["enforcement"]["executed"] is False and "cancelled by the caller" in r["enforcement"]["reason"]
    assert guard.approvals.list() == []  # nothing left pending for an approver
