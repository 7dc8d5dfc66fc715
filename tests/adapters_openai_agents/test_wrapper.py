"""`AgentsDoor.protect` / `door.tool`: every function tool call of a real `Runner.run` agent loop goes through
aarmor's pipeline. The model is `agents.testing.ScriptedModel` standing in for an LLM (see conftest.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner, WebSearchTool, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from aarmor import Identity
from aarmor.adapters.openai_agents import AgentsDoor
from aarmor.config import ApprovalsConfig, DeferralsConfig

from .conftest import receipts, tool_outputs, wait_for

POLICY = """
policy: {id: agents-door, version: "1", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: shell}
    action: DENY
    reason: shell commands are not allowed for this agent
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
  - id: deploy-waits-for-window
    match: {tool: deploy, context: {window: {ne: open}}}
    action: DEFER
    context_needed: [window]
    timeout: 30
    reason: deploys wait for the change window
"""

ALICE = Identity(human="alice@company.com", agent="support-bot", roles=["support"])


class Tools:
    """Real function tools that remember exactly what they were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

        @function_tool
        def search_orders(customer: str, limit: int) -> str:
            """Search a customer's orders."""
            self.calls.append(("search_orders", {"customer": customer, "limit": limit}))
            return f"{limit} orders of {customer}"

        @function_tool
        def shell(cmd: str) -> str:
            """Run a shell command."""
            self.calls.append(("shell", {"cmd": cmd}))
            return "root"

        @function_tool
        async def refund(order: str, amount: float) -> str:
            """Refund an order."""
            self.calls.append(("refund", {"order": order, "amount": amount}))
            return f"refunded {amount} on {order}"

        @function_tool
        def deploy(service: str) -> str:
            """Deploy a service."""
            self.calls.append(("deploy", {"service": service}))
            return f"{service} deployed"

        @function_tool
        def flaky(n: int) -> str:
            """A tool that fails."""
            self.calls.append(("flaky", {"n": n}))
            raise ConnectionError("backend unreachable")

        self.all = [search_orders, shell, refund, deploy, flaky]


def _guard(make_guard: Any) -> Any:
    return make_guard(POLICY, approvals=ApprovalsConfig(groups=(("finance", ("carol@company.com",)),),
                                                        poll_interval=0.02))


def test_all_five_decisions_in_one_agent_run(make_guard: Any, tmp_path: Path) -> None:
    guard = _guard(make_guard)
    guard.add_resolver(lambda view: {"window": "open"}, name="change-calendar")  # resolves the DEFER
    tools = Tools()
    model = ScriptedModel([
        [function_call("search_orders", {"customer": "acme", "limit": 500}, call_id="c-modify"),
         function_call("shell", {"cmd": "cat /etc/shadow"}, call_id="c-deny")],
        [function_call("refund", {"order": "o-1", "amount": 25.0}, call_id="c-stepup")],
        [function_call("deploy", {"service": "billing"}, call_id="c-defer")],
        [assistant_message("all done")],
    ])
    agent = Agent(name="support-bot", instructions="help", model=model, tools=tools.all)
    door = AgentsDoor(guard, identity=ALICE)

    async def main() -> Any:
        run = asyncio.ensure_future(door.run(agent, "Refund order o-1 for acme and deploy billing"))
        [pending] = await wait_for(lambda: guard.approvals.list(), "the refund approval")
        assert pending["request"]["tool"] == "refund"
        assert tools.calls == [("search_orders", {"customer": "acme", "limit": 10})]  # refund still waits
        guard.approvals.decide(pending["id"], approver="carol@company.com", granted=True, reason="invoice ok",
                               channel="test")
        return await run

    result = asyncio.run(main())
    assert result.final_output == "all done"
    # MODIFY: the tool body received the capped limit; DENY: shell never ran; STEP_UP and DEFER ran once resolved
    assert tools.calls == [("search_orders", {"customer": "acme", "limit": 10}),
                           ("refund", {"order": "o-1", "amount": 25.0}),
                           ("deploy", {"service": "billing"})]
    second_turn = tool_outputs(model.calls[1])
    assert second_turn["c-modify"] == "10 orders of acme"
    denial = second_turn["c-deny"]
    assert denial.startswith("aarmor blocked the call to `shell`: decision DENY (rule no-shell).")
    assert "shell commands are not allowed for this agent" in denial and "The tool did not run." in denial
    assert tool_outputs(model.calls[2])["c-stepup"] == "refunded 25.0 on o-1"
    assert tool_outputs(model.calls[3])["c-defer"] == "billing deployed"

    rs = receipts(guard, tmp_path)
    by_tool = {(r["action"]["tool"], r["kind"]): r for r in rs}
    assert len({r["session_id"] for r in rs}) == 1  # one run, one session, one receipt chain
    deny = by_tool[("shell", "decision")]
    assert deny["decision"]["result"] == "DENY" and deny["execution"] is None
    assert deny["receipt_id"] in denial  # the model's text names the signed record
    mod = by_tool[("search_orders", "decision")]
    assert mod["decision"]["result"] == "MODIFY" and mod["execution"]["success"] is True
    assert mod["action"]["parameters"]["limit"] == 500  # what the model asked for is what is recorded
    assert mod["modification"]["modified_parameters"] == {"customer": "acme", "limit": 10}  # what the tool got
    step = by_tool[("refund", "decision")]
    assert step["decision"]["result"] == "STEP_UP" and step["approval"]["approver"] == "carol@company.com"
    assert step["execution"]["success"] is True and step["execution"]["output_hash"]
    assert by_tool[("deploy", "deferral")]["decision"]["result"] == "DEFER"
    res = by_tool[("deploy", "resolution")]
    assert res["execution"]["success"] is True
    # the session's original request is the run's first user message
    start = next(guard.store.read_log(rs[0]["session_id"])).body
    assert start["original_request"] == "Refund order o-1 for acme and deploy billing"


def test_step_up_refused_and_tool_failure_are_recorded_and_readable(make_guard: Any, tmp_path: Path) -> None:
    guard = _guard(make_guard)
    tools = Tools()
    model = ScriptedModel([
        [function_call("refund", {"order": "o-9", "amount": 900.0}, call_id="c-refund"),
         function_call("flaky", {"n": 1}, call_id="c-flaky")],
        [assistant_message("sorry")],
    ])
    agent = Agent(name="support-bot", model=model, tools=tools.all)
    door = AgentsDoor(guard, identity=ALICE, original_request="refund o-9")

    async def main() -> Any:
        run = asyncio.ensure_future(door.run(agent, [{"role": "user", "content": "ignored: the door has one"}]))
        [pending] = await wait_for(lambda: guard.approvals.list(), "the refund approval")
        guard.approvals.decide(pending["id"], approver="carol@company.com", granted=False, reason="too much",
                               channel="test")
        return await run

    asyncio.run(main())
    assert tools.calls == [("flaky", {"n": 1})]  # the refused refund never ran
    out = tool_outputs(model.calls[1])
    assert out["c-refund"].startswith("aarmor blocked the call to `refund`: decision DENY")
    assert "The tool did not run." in out["c-refund"]
    # the tool's own exception: recorded as a failed execution, and the model gets the SDK's usual text
    assert out["c-flaky"].startswith("An error occurred while running the tool")  # the SDK's default text
    rs = {r["action"]["tool"]: r for r in receipts(guard, tmp_path)}
    assert rs["refund"]["execution"] is None and rs["refund"]["approval"]["granted"] is False
    assert rs["refund"]["receipt_id"] in out["c-refund"]
    assert rs["flaky"]["execution"]["success"] is False
    assert rs["flaky"]["execution"]["error"] == "ConnectionError: backend unreachable"
    start = next(guard.store.read_log(rs["flaky"]["session_id"])).body
    assert start["original_request"] == "refund o-9"


def test_an_unresolved_defer_times_out_as_deny(make_guard: Any, tmp_path: Path) -> None:
    # nobody supplies the window: the deferral's timeout ends it (a DEFER the PDP makes for context a rule
    # needs and the session lacks waits `deferrals.default_timeout`, shortened here)
    guard = make_guard(POLICY, deferrals=DeferralsConfig(default_timeout=1.0, poll_interval=0.05))
    tools = Tools()
    model = ScriptedModel([[function_call("deploy", {"service": "billing"}, call_id="c1")],
                           [assistant_message("ok")]])
    asyncio.run(AgentsDoor(guard, identity=ALICE).run(Agent(name="a", model=model, tools=tools.all), "deploy"))
    assert tools.calls == []
    text = tool_outputs(model.calls[1])["c1"]
    assert text.startswith("aarmor blocked the call to `deploy`: decision DENY") and "The tool did not run." in text
    assert "timeout" in text
    res = [r for r in receipts(guard, tmp_path) if r["kind"] == "resolution"]
    assert len(res) == 1 and res[0]["execution"] is None and res[0]["receipt_id"] in text


def test_malformed_arguments_fail_closed_recorded(make_guard: Any, tmp_path: Path) -> None:
    guard = _guard(make_guard)
    tools = Tools()
    model = ScriptedModel([[function_call("deploy", '{"service": "billing"', call_id="c-bad")],
                           [assistant_message("ok")]])
    asyncio.run(AgentsDoor(guard, identity=ALICE).run(Agent(name="a", model=model, tools=tools.all), "deploy"))
    assert tools.calls == []
    text = tool_outputs(model.calls[1])["c-bad"]
    assert text.startswith("aarmor blocked the call to `deploy`: decision DENY") and "fail closed" in text
    [r] = receipts(guard, tmp_path)
    assert r["decision"]["result"] == "DENY" and r["execution"] is None and r["receipt_id"] in text


def test_without_a_bound_session_each_run_gets_its_own_session_from_its_input(
        make_guard: Any, tmp_path: Path) -> None:
    guard = _guard(make_guard)
    tools = Tools()
    door = AgentsDoor(guard, identity=ALICE)

    def script() -> ScriptedModel:
        return ScriptedModel([[function_call("search_orders", {"customer": "a", "limit": 1}, call_id="c1")],
                              [function_call("search_orders", {"customer": "b", "limit": 2}, call_id="c2")],
                              [assistant_message("ok")]])

    async def main() -> None:  # plain Runner.run on the protected agent: no door.run, no guard.session
        await Runner.run(door.protect(Agent(name="a", model=script(), tools=tools.all)), "first run")
        await Runner.run(door.protect(Agent(name="a", model=script(), tools=tools.all)),
                         [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": [{"type": "input_text", "text": "second run"}]}])

    asyncio.run(main())
    door.close()
    rs = receipts(guard, tmp_path)
    sessions: dict[str, list[str]] = {}
    for r in rs:
        sessions.setdefault(r["session_id"], []).append(r["action"]["parameters"]["customer"])
    assert sorted(sessions.values()) == [["a", "b"], ["a", "b"]]  # two runs, two calls each, one session per run
    requests = sorted(next(guard.store.read_log(s)).body["original_request"] for s in sessions)
    assert requests == ["first run", "second run"]
    for s in sessions:  # every session the door opened was ended
        assert list(guard.store.read_log(s))[-1].kind == "session_end"


def test_a_session_that_cannot_open_means_the_tool_does_not_run(make_guard: Any) -> None:
    guard = _guard(make_guard)
    tools = Tools()
    door = AgentsDoor(guard, identity=ALICE)
    guard.close()  # the store is gone: no session, so no decision
    model = ScriptedModel([[function_call("deploy", {"service": "x"}, call_id="c1")], [assistant_message("ok")]])
    asyncio.run(Runner.run(door.protect(Agent(name="a", model=model, tools=tools.all)), "deploy x"))
    assert tools.calls == []
    text = tool_outputs(model.calls[1])["c1"]
    assert text.startswith("aarmor blocked the call to `deploy`: decision DENY. Reason: fail closed:")


def test_protect_refuses_tools_it_cannot_mediate_and_is_idempotent(make_guard: Any) -> None:
    guard = _guard(make_guard)
    door = AgentsDoor(guard, identity=ALICE)
    with pytest.raises(TypeError, match=r"cannot mediate.*WebSearchTool"):
        door.protect(Agent(name="a", tools=[WebSearchTool()]))
    tools = Tools()
    agent = Agent(name="a", tools=tools.all, handoffs=[Agent(name="b", tools=[tools.all[1]])])
    once = door.protect(agent)
    twice = door.protect(once)
    assert [t.on_invoke_tool for t in once.tools] == [t.on_invoke_tool for t in twice.tools]
    assert agent.tools[0].on_invoke_tool is tools.all[0].on_invoke_tool  # the original is untouched
    assert once.handoffs[0].tools[0].on_invoke_tool is not tools.all[1].on_invoke_tool  # handoff protected


def test_a_closed_bound_session_means_the_tool_does_not_run(make_guard: Any) -> None:
    guard = _guard(make_guard)
    tools = Tools()
    session = guard.session(identity=ALICE, original_request="deploy x")
    session.close()
    door = AgentsDoor(guard, identity=ALICE, session=session)
    model = ScriptedModel([[function_call("deploy", {"service": "x"}, call_id="c1")], [assistant_message("ok")]])
    asyncio.run(door.run(Agent(name="a", model=model, tools=tools.all), "deploy x"))
    assert tools.calls == []
    text = tool_outputs(model.calls[1])["c1"]
    assert text.startswith("aarmor blocked the call to `deploy`: decision DENY. Reason: fail closed: RuntimeError")


def test_run_sync_and_run_streamed_are_mediated_too(make_guard: Any, tmp_path: Path) -> None:
    guard = _guard(make_guard)
    tools = Tools()
    door = AgentsDoor(guard, identity=ALICE)

    def script() -> ScriptedModel:
        return ScriptedModel([[function_call("shell", {"cmd": "id"}, call_id="c1"),
                               function_call("search_orders", {"customer": "a", "limit": 99}, call_id="c2")],
                              [assistant_message("ok")]])

    sync_model, streamed_model = script(), script()
    Runner.run_sync(door.protect(Agent(name="a", model=sync_model, tools=tools.all)), "sync run")
    # run_sync runs on (and leaves open) the thread's default event loop, by design: close it here
    asyncio.get_event_loop_policy().get_event_loop().close()
    asyncio.set_event_loop(None)

    async def streamed() -> None:
        result = Runner.run_streamed(door.protect(Agent(name="a", model=streamed_model, tools=tools.all)),
                                     "streamed run")
        async for _ in result.stream_events():
            pass

    asyncio.run(streamed())
    door.close()
    assert tools.calls == [("search_orders", {"customer": "a", "limit": 10})] * 2
    for model in (sync_model, streamed_model):
        assert tool_outputs(model.calls[1])["c1"].startswith("aarmor blocked the call to `shell`: decision DENY")
    assert [r["decision"]["result"] for r in receipts(guard, tmp_path)].count("DENY") == 2


def test_core_aarmor_imports_without_the_sdk_and_the_door_names_the_extra() -> None:
    code = """
import sys
sys.modules["agents"] = None  # as if openai-agents were not installed
import aarmor, aarmor.adapters.sdk
assert not any(m.startswith("aarmor.adapters.openai_agents") for m in sys.modules)
try:
    import aarmor.adapters.openai_agents
except ImportError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'aarmor[openai-agents]'" in out.stdout
