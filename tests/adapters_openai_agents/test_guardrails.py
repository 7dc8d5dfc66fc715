"""`AgentsDoor.guardrails()`: aarmor as the SDK's own tool input/output guardrails, in real `Runner.run` loops
(the model is `agents.testing.ScriptedModel` standing in for an LLM, see conftest.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agents import Agent, ToolGuardrailFunctionOutput, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from aarmor import Identity
from aarmor.adapters.openai_agents import AgentsDoor
from aarmor.config import ApprovalsConfig

from .conftest import receipts, tool_outputs, wait_for

POLICY = """
policy: {id: agents-guardrails, version: "1", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: shell}
    action: DENY
    reason: shell commands are not allowed
  - id: cap-search
    match: {tool: search_orders, parameters: {limit: {gt: 10}}}
    action: MODIFY
    modifications: {parameters: {limit: 10}}
    reason: at most 10 rows
  - id: refunds-need-finance
    match: {tool: refund}
    action: STEP_UP
    approvers: [finance]
    timeout: 30
    reason: refunds need a finance approval
"""

ALICE = Identity(human="alice@company.com", agent="support-bot")


def test_the_sdk_guardrail_behaviours_this_door_relies_on_exist() -> None:
    assert ToolGuardrailFunctionOutput.allow().behavior == {"type": "allow"}
    assert ToolGuardrailFunctionOutput.reject_content("no").behavior == {"type": "reject_content", "message": "no"}
    assert ToolGuardrailFunctionOutput.raise_exception().behavior == {"type": "raise_exception"}


def test_guardrail_pair_allow_deny_modify_step_up(make_guard: Any, tmp_path: Path) -> None:
    guard = make_guard(POLICY, approvals=ApprovalsConfig(groups=(("finance", ("carol@company.com",)),),
                                                         poll_interval=0.02))
    calls: list[tuple[str, Any]] = []

    @function_tool
    def lookup(order: str) -> str:
        """Look an order up."""
        calls.append(("lookup", order))
        return f"order {order}: shipped"

    @function_tool
    def shell(cmd: str) -> str:
        """Run a shell command."""
        calls.append(("shell", cmd))
        return "root"

    @function_tool
    def search_orders(customer: str, limit: int) -> str:
        """Search orders."""
        calls.append(("search_orders", limit))
        return "rows"

    @function_tool
    def refund(order: str) -> str:
        """Refund an order."""
        calls.append(("refund", order))
        return f"refunded {order}"

    door = AgentsDoor(guard, identity=ALICE)
    model = ScriptedModel([
        [function_call("lookup", {"order": "o-1"}, call_id="c-allow"),
         function_call("shell", {"cmd": "id"}, call_id="c-deny"),
         function_call("search_orders", {"customer": "acme", "limit": 99}, call_id="c-modify")],
        [function_call("refund", {"order": "o-1"}, call_id="c-stepup")],
        [assistant_message("done")],
    ])
    # the SDK-idiomatic way: the tools stay as they are, with aarmor's guardrails attached
    agent = Agent(name="support-bot", model=model,
                  tools=door.with_guardrails([lookup, shell, search_orders, refund]))

    async def main() -> None:
        with guard.session(identity=ALICE, original_request="check order o-1 and refund it"):
            from agents import Runner

            run = asyncio.ensure_future(Runner.run(agent, "check order o-1 and refund it"))
            [pending] = await wait_for(lambda: guard.approvals.list(), "the refund approval")
            guard.approvals.decide(pending["id"], approver="carol@company.com", granted=True, reason="ok",
                                   channel="test")
            await run

    asyncio.run(main())
    assert calls == [("lookup", "o-1"), ("refund", "o-1")]  # DENY and MODIFY: the tool body never ran
    out = tool_outputs(model.calls[1])
    assert out["c-allow"] == "order o-1: shipped"
    assert out["c-deny"].startswith("aarmor blocked the call to `shell`: decision DENY (rule no-shell).")
    assert "ModifyNotEnforceable" not in out["c-modify"] and "cannot change a tool's arguments" in out["c-modify"]
    assert tool_outputs(model.calls[2])["c-stepup"] == "refunded o-1"

    rs = {r["action"]["tool"]: r for r in receipts(guard, tmp_path)}
    # ALLOW through the guardrails: the receipt holds the real execution and the digest of the real output
    allow = rs["lookup"]
    assert allow["decision"]["result"] == "ALLOW" and allow["execution"]["success"] is True
    log = [e.body for e in guard.store.read_log(allow["session_id"]) if e.kind == "action_outcome"
           and e.body["tool"] == "lookup"]
    assert allow["execution"]["output_hash"] == log[0]["output_digest"]
    # ...the same digest aarmor gives that output when the SDK door's own `invoke` runs the call
    with guard.session(identity=ALICE) as s:
        s.invoke("lookup", {"order": "o-1"}, lambda a: "order o-1: shipped")
        [direct] = [e.body for e in guard.store.read_log(s.session_id) if e.kind == "action_outcome"]
    assert log[0]["output_digest"] == direct["output_digest"] and direct["output_digest"]
    assert rs["shell"]["execution"] is None and rs["shell"]["receipt_id"] in out["c-deny"]
    # MODIFY: recorded as an execution step that failed before the tool body was called
    assert rs["search_orders"]["decision"]["result"] == "MODIFY"
    assert rs["search_orders"]["execution"]["error"].startswith("ModifyNotEnforceable:")
    assert rs["refund"]["approval"]["granted"] is True and rs["refund"]["execution"]["success"] is True


def test_output_guardrail_alone_withholds_output(make_guard: Any) -> None:
    guard = make_guard(POLICY)

    @function_tool
    def lookup(order: str) -> str:
        """Look an order up."""
        return "secret order data"

    door = AgentsDoor(guard, identity=ALICE)
    _, out_guardrail = door.guardrails()
    tool = lookup
    tool.tool_output_guardrails = [out_guardrail]  # misconfigured: no input guardrail decided this call
    model = ScriptedModel([[function_call("lookup", {"order": "o-1"}, call_id="c1")], [assistant_message("ok")]])
    from agents import Runner

    asyncio.run(Runner.run(Agent(name="a", model=model, tools=[tool]), "look"))
    text = tool_outputs(model.calls[1])["c1"]
    assert "secret order data" not in text and "no aarmor input-guardrail decision" in text


def test_an_allowed_call_whose_output_never_comes_is_recorded_as_failed(make_guard: Any, tmp_path: Path) -> None:
    """The documented limit: another input guardrail after aarmor's rejects the call, so the SDK never runs
    the tool nor the output guardrail; the open action ends as a failed execution after the timeout."""
    from agents import Runner, tool_input_guardrail

    guard = make_guard(POLICY)
    door = AgentsDoor(guard, identity=ALICE, guardrail_output_timeout=0.3)
    ran: list[str] = []

    @tool_input_guardrail
    def house_rule(data: Any) -> ToolGuardrailFunctionOutput:
        return ToolGuardrailFunctionOutput.reject_content("the house rule says no")

    @function_tool
    def lookup(order: str) -> str:
        """Look an order up."""
        ran.append(order)
        return "shipped"

    [tool] = door.with_guardrails([lookup])
    tool.tool_input_guardrails = [*(tool.tool_input_guardrails or []), house_rule]  # placed after aarmor's
    model = ScriptedModel([[function_call("lookup", {"order": "o-1"}, call_id="c1")], [assistant_message("ok")]])

    async def main() -> None:
        with guard.session(identity=ALICE) as s:
            await Runner.run(Agent(name="a", model=model, tools=[tool]), "look o-1 up")
            await wait_for(lambda: list(guard.store.read_receipts(s.session_id)), "the action's receipt")

    asyncio.run(main())
    assert ran == [] and tool_outputs(model.calls[1])["c1"] == "the house rule says no"
    [r] = receipts(guard, tmp_path)
    assert r["decision"]["result"] == "ALLOW" and r["execution"]["success"] is False
    assert r["execution"]["error"].startswith("TimeoutError")


def test_a_tool_exception_the_sdk_turned_into_text_is_recorded_as_that_output(make_guard: Any, tmp_path: Path) -> None:
    """The documented limit of the pair: the SDK turns the exception into text before the output guardrail
    runs and tells it nothing else, so the receipt records a successful execution with that text as output
    (the wrapper, which runs the body itself, records the failure: test_wrapper.py)."""
    guard = make_guard(POLICY)
    door = AgentsDoor(guard, identity=ALICE)

    @function_tool
    def flaky(n: int) -> str:
        """A tool that fails."""
        raise ConnectionError("backend unreachable")

    model = ScriptedModel([[function_call("flaky", {"n": 1}, call_id="c1")], [assistant_message("ok")]])
    asyncio.run(door.run(Agent(name="a", model=model, tools=door.with_guardrails([flaky])), "try it"))
    assert tool_outputs(model.calls[1])["c1"].startswith("An error occurred while running the tool")
    [r] = receipts(guard, tmp_path)
    assert r["execution"]["success"] is True and r["execution"]["error"] is None
