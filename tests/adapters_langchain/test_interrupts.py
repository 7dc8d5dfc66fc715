"""The LangChain door, interrupt mode: STEP_UP and DEFER become LangGraph interrupts; the human's answer comes
back with `Command(resume=...)` and is handed to aarmor's own approval and deferral desks (channel "langgraph").

Real `create_agent` agents with a real checkpointer (LangGraph's InMemorySaver) and a real Guard; the LLM is
scripted (support.py). What must hold: one aarmor action per tool call however often the node re-executes,
the tool runs at most once and only after aarmor recorded the approval or the context, refusals are asked
again, and a resume that cannot continue the action is a denial, not a second action.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from aarmor.adapters.langchain import AarmorMiddleware
from tests.adapters_langchain.support import (
    ALICE,
    ScriptedChatModel,
    Tools,
    by_call,
    call,
    done,
    guard_for,
    script,
    verify,
    when,
)

ASK = {"messages": [{"role": "user", "content": "pay the vendor and rotate the database credentials"}]}
CFG = {"configurable": {"thread_id": "t1"}}
SID = "lg_t1"


def _agent(guard: Any, tools: Tools, *turns: Any, saver: Any = None) -> Any:
    model = ScriptedChatModel(messages=script(*turns))
    return create_agent(model, tools=tools.all, middleware=[AarmorMiddleware(guard, ALICE, interrupts=True)],
                        checkpointer=saver or InMemorySaver())


def _requested(guard: Any, sid: str, tool: str) -> list[Any]:
    return [r for r in guard.store.read_log(sid) if r.kind == "action_requested"
            and r.body["action"]["tool"] == tool]


def _interrupt(result: dict[str, Any]) -> dict[str, Any]:
    [it] = result["__interrupt__"]
    value: dict[str, Any] = it.value
    return value


def test_step_up_interrupt_refused_then_approved_runs_once_with_the_approval_recorded(
        make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent = _agent(guard, tools, call("transfer", {"amount": 5000, "to": "acme"}, "c1"), done())
    ask = _interrupt(agent.invoke(ASK, CFG))
    assert tools.ran == []
    assert ask["aarmor"] == "approval" and ask["decision"] == "STEP_UP" and ask["tool"] == "transfer"
    assert ask["reason"] == "transfers over 1000 need finance" and ask["approvers"] == ["finance"]
    assert ask["parameters"] == {"amount": 5000, "to": "acme"} and ask["tool_call_id"] == "c1"
    [pending] = guard.approvals.list()
    assert pending["id"] == ask["id"] and pending["action_id"] == ask["action_id"]
    # the requester cannot approve: aarmor refuses and records it; the graph asks again, saying why
    again = _interrupt(agent.invoke(Command(resume={"approved": True, "approver": "alice@company.com"}), CFG))
    assert again["id"] == ask["id"] and again["refused"].startswith("self_approval")
    assert tools.ran == []
    result = agent.invoke(Command(resume={"approved": True, "approver": "carol@company.com", "reason": "invoice ok"}),
                          CFG)
    assert tools.ran == [("transfer", {"amount": 5000, "to": "acme"})]
    assert by_call(result)["c1"].content == "sent 5000 to acme"
    [body] = verify(guard, SID)
    assert body["action"]["action_id"] == ask["action_id"] and body["enforcement"]["executed"] is True
    assert body["approval"]["request_id"] == ask["id"] and body["approval"]["approver"] == "carol@company.com"
    assert body["approval"]["channel"] == "langgraph"  # where the human answered, in the signed receipt
    item = guard.approvals.get(ask["id"])
    assert item["decision"]["channel"] == "langgraph" and item["decision"]["reason"] == "invoice ok"
    assert [r["code"] for r in item["refusals"]] == ["self_approval"]
    assert len(_requested(guard, SID, "transfer")) == 1  # three executions of the node, one action


def test_step_up_interrupt_denied_does_not_run(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent = _agent(guard, tools, call("transfer", {"amount": 5000, "to": "acme"}, "c1"), done())
    _interrupt(agent.invoke(ASK, CFG))
    result = agent.invoke(Command(resume={"approved": False, "approver": "dan@company.com", "reason": "no PO"}), CFG)
    msg = by_call(result)["c1"]
    assert tools.ran == [] and msg.status == "error" and "STEP_UP not granted: no PO" in msg.content
    [body] = verify(guard, SID)
    assert body["approval"]["granted"] is False and body["approval"]["approver"] == "dan@company.com"
    assert body["receipt_id"] in msg.content and body["enforcement"]["executed"] is False


def test_defer_interrupt_resolved_by_context(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent = _agent(guard, tools, call("rotate", {"service": "db"}, "c1"), done())
    ask = _interrupt(agent.invoke(ASK, CFG))
    assert ask["aarmor"] == "deferral" and ask["decision"] == "DEFER"
    assert ask["context_needed"] == ["context.maintenance_window"] and "maintenance_window" in ask["reason"]
    # a field the deferral does not need is refused and asked again
    again = _interrupt(agent.invoke(Command(resume={"context": {"other": 1}, "by": "ops@company.com"}), CFG))
    assert again["refused"].startswith("bad_field") and tools.ran == []
    result = agent.invoke(Command(resume={"context": {"maintenance_window": "open"}, "by": "ops@company.com"}), CFG)
    assert tools.ran == [("rotate", {"service": "db"})] and by_call(result)["c1"].content == "rotated db"
    bodies = verify(guard, SID)
    assert [b["kind"] for b in bodies] == ["deferral", "resolution"]
    assert bodies[1]["deferral"]["resolution_method"] == "context_supplied"
    assert bodies[1]["deferral"]["resolver"] == "ops@company.com"
    supplied = [r for r in guard.store.read_log(SID) if r.kind == "context_value"]
    assert [r.body.get("source") for r in supplied] == ["langgraph:ops@company.com"]
    assert len(_requested(guard, SID, "rotate")) == 1


def test_defer_interrupt_that_times_out_is_denied_on_resume(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard, defer_timeout=0.3)
    tools = Tools()
    agent = _agent(guard, tools, call("purge", {"cache": "cdn"}, "c1"), done())
    ask = _interrupt(agent.invoke(ASK, CFG))
    when(lambda: guard.deferrals.get(ask["id"])["status"] != "pending", "the deferral timing out")
    result = agent.invoke(Command(resume={"context": {"purge_confirmed": True}, "by": "ops@company.com"}), CFG)
    msg = by_call(result)["c1"]
    assert tools.ran == [] and msg.status == "error" and "DEFER not resolved" in msg.content
    bodies = verify(guard, SID)
    assert [b["kind"] for b in bodies] == ["deferral", "resolution"]
    assert bodies[1]["deferral"]["resolution_method"] == "timeout" and bodies[1]["enforcement"]["result"] == "DENY"


def test_async_interrupts_across_event_loops(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent = _agent(guard, tools, call("transfer", {"amount": 2000, "to": "acme"}, "c1"),
                   call("rotate", {"service": "db"}, "c2"), done())
    first = asyncio.run(agent.ainvoke(ASK, CFG))  # each asyncio.run is a new event loop, as in a web server
    assert _interrupt(first)["aarmor"] == "approval"
    second = asyncio.run(agent.ainvoke(Command(resume={"approved": True, "approver": "carol@company.com"}), CFG))
    assert _interrupt(second)["aarmor"] == "deferral"
    result = asyncio.run(agent.ainvoke(Command(resume={"context": {"maintenance_window": "open"}, "by": "ops"}),
                                       CFG))
    assert tools.ran == [("transfer", {"amount": 2000, "to": "acme"}), ("rotate", {"service": "db"})]
    assert by_call(result)["c2"].content == "rotated db"
    bodies = verify(guard, SID)
    assert [(b["action"]["tool"], b["kind"], b["enforcement"]["result"]) for b in bodies] == [
        ("transfer", "decision", "ALLOW"), ("rotate", "deferral", "DEFER"), ("rotate", "resolution", "ALLOW")]


def test_other_decisions_in_interrupt_mode_need_no_interrupt(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent = _agent(guard, tools, call("search", {"query": "q", "limit": 99}, "c1"),
                   call("shell", {"command": "id"}, "c2"), done())
    result = agent.invoke(ASK, CFG)
    assert "__interrupt__" not in result
    assert tools.ran == [("search", {"query": "q", "limit": 10})]
    assert "aarmor DENY" in by_call(result)["c2"].content
    assert [b["enforcement"]["result"] for b in verify(guard, SID)] == ["MODIFY", "DENY"]


def test_approval_given_in_aarmor_while_paused_runs_on_resume(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent = _agent(guard, tools, call("transfer", {"amount": 5000, "to": "acme"}, "c1"), done())
    ask = _interrupt(agent.invoke(ASK, CFG))
    guard.approvals.decide(ask["id"], approver="carol@company.com", granted=True, reason="via CLI", channel="cli")
    assert tools.ran == []  # granted, but the tool runs in the graph: not before it is resumed
    result = agent.invoke(Command(resume="decided in aarmor"), CFG)  # any value: the item is decided
    assert tools.ran == [("transfer", {"amount": 5000, "to": "acme"})]
    assert by_call(result)["c1"].content == "sent 5000 to acme"
    [body] = verify(guard, SID)
    assert body["approval"]["reason"] == "via CLI" and body["approval"]["channel"] == "cli"


def test_resume_where_the_action_cannot_continue_is_denied_not_repeated(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    saver = InMemorySaver()
    turns = (call("transfer", {"amount": 5000, "to": "acme"}, "c1"), done())
    ask = _interrupt(_agent(guard, tools, *turns, saver=saver).invoke(ASK, CFG))
    # a new middleware (as after a restart) on the same checkpoints: the waiting action is not here
    elsewhere = _agent(guard, tools, *turns[1:], saver=saver)
    result = elsewhere.invoke(Command(resume={"approved": True, "approver": "carol@company.com"}), CFG)
    msg = by_call(result)["c1"]
    assert tools.ran == [] and msg.status == "error" and ask["id"] in msg.content
    assert guard.approvals.get(ask["id"])["status"] == "pending"  # the answer was not handed over
    assert len(_requested(guard, SID, "transfer")) == 1  # and no second action was started


def test_interrupt_mode_without_a_checkpointer_is_a_clear_error(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    model = ScriptedChatModel(messages=script(call("transfer", {"amount": 5000, "to": "acme"}, "c1"), done()))
    agent = create_agent(model, tools=tools.all, middleware=[AarmorMiddleware(guard, ALICE, interrupts=True)])
    with pytest.raises(RuntimeError, match="needs a checkpointer"):
        agent.invoke(ASK)
    assert tools.ran == [] and guard.approvals.list(status=None) == []  # no action was started


def test_parallel_tool_calls_interrupt_together_and_resume_by_interrupt_id(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    three = AIMessage(content="", tool_calls=[
        {"name": "transfer", "args": {"amount": 5000, "to": "acme"}, "id": "c1", "type": "tool_call"},
        {"name": "rotate", "args": {"service": "db"}, "id": "c2", "type": "tool_call"},
        {"name": "search", "args": {"query": "q"}, "id": "c3", "type": "tool_call"}])
    agent = _agent(guard, tools, three, done())
    paused = agent.invoke(ASK, CFG)
    asks = {it.value["aarmor"]: it for it in paused["__interrupt__"]}
    assert sorted(asks) == ["approval", "deferral"] and tools.ran == [("search", {"query": "q", "limit": 5})]
    result = agent.invoke(Command(resume={
        asks["approval"].id: {"approved": True, "approver": "carol@company.com"},
        asks["deferral"].id: {"context": {"maintenance_window": "open"}, "by": "ops@company.com"}}), CFG)
    assert "__interrupt__" not in result
    assert sorted(tools.ran) == [("rotate", {"service": "db"}), ("search", {"query": "q", "limit": 5}),
                                 ("transfer", {"amount": 5000, "to": "acme"})]  # the search did not run twice
    assert {c: m.status for c, m in by_call(result).items()} == {"c1": "success", "c2": "success", "c3": "success"}
    bodies = verify(guard, SID)
    assert sorted((b["action"]["tool"], b["kind"]) for b in bodies) == [
        ("rotate", "deferral"), ("rotate", "resolution"), ("search", "decision"), ("transfer", "decision")]
    assert len([r for r in guard.store.read_log(SID) if r.kind == "action_requested"]) == 3


def test_granted_while_paused_and_never_resumed_is_recorded_as_not_run(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    model = ScriptedChatModel(messages=script(call("transfer", {"amount": 5000, "to": "acme"}, "c1"), done()))
    door = AarmorMiddleware(guard, ALICE, interrupts=True, resume_timeout=0.2)
    agent = create_agent(model, tools=tools.all, middleware=[door], checkpointer=InMemorySaver())
    ask = _interrupt(agent.invoke(ASK, CFG))
    guard.approvals.decide(ask["id"], approver="carol@company.com", granted=True, reason="via CLI", channel="cli")
    [body] = when(lambda: list(guard.store.read_receipts(SID)), "the receipt of the unresumed action")
    assert "not resumed" in body.body["execution"]["error"] and body.body["execution"]["success"] is False
    result = agent.invoke(Command(resume="late"), CFG)
    msg = by_call(result)["c1"]
    assert tools.ran == [] and msg.status == "error" and "not resumed" in msg.content
