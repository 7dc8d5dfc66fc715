"""The LangChain door, blocking mode: a real `create_agent` agent (langchain 1.x, langgraph) whose tool calls go
through `AarmorMiddleware` to a real Guard (SQLite store in tmp_path). Only the LLM is scripted (support.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from aarmor import Identity
from aarmor.adapters.langchain import AarmorMiddleware
from aarmor.errors import InputError
from tests.adapters_langchain.support import (
    ALICE,
    ScriptedChatModel,
    Tools,
    by_call,
    call,
    done,
    guard_for,
    receipts,
    script,
    verify,
    when,
)

ASK = {"messages": [{"role": "user", "content": "tidy up the knowledge base and pay the vendor"}]}


def _agent(guard: Any, tools: Tools, *turns: Any, **kw: Any) -> tuple[Any, ScriptedChatModel, AarmorMiddleware]:
    model = ScriptedChatModel(messages=script(*turns))
    door = AarmorMiddleware(guard, ALICE, **kw)
    return create_agent(model, tools=tools.all, middleware=[door], checkpointer=InMemorySaver()), model, door


def _decide_when_pending(guard: Any, *, granted: bool, who: str = "carol@company.com") -> threading.Thread:
    """A finance approver on aarmor's own desk (what the CLI, the HTTP API and the page call)."""
    def run() -> None:
        [item] = when(guard.approvals.list, "a pending approval")
        guard.approvals.decide(item["id"], approver=who, granted=granted, reason="checked the invoice",
                               channel="cli")

    t = threading.Thread(target=run)
    t.start()
    return t


def _supply_when_pending(guard: Any, **fields: Any) -> threading.Thread:
    def run() -> None:
        [item] = when(guard.deferrals.list, "a pending deferral")
        guard.deferrals.supply(item["id"], fields, by="ops@company.com", channel="cli")

    t = threading.Thread(target=run)
    t.start()
    return t


def _five_turns() -> list[Any]:
    return [call("search", {"query": "stale pages", "limit": 3}, "c-allow"),
            call("search", {"query": "all pages", "limit": 500}, "c-modify"),
            call("shell", {"command": "rm -rf /kb"}, "c-deny"),
            call("transfer", {"amount": 5000, "to": "acme"}, "c-stepup"),
            call("rotate", {"service": "kb-db"}, "c-defer"),
            done("all done")]


def _check_five(guard: Any, tools: Tools, model: ScriptedChatModel, result: dict[str, Any]) -> None:
    msgs = by_call(result)
    # ALLOW and MODIFY ran; MODIFY with the capped limit, and that is what the tool received
    assert tools.ran == [("search", {"query": "stale pages", "limit": 3}),
                         ("search", {"query": "all pages", "limit": 10}),
                         ("transfer", {"amount": 5000, "to": "acme"}), ("rotate", {"service": "kb-db"})]
    assert msgs["c-modify"].content == "10 results for all pages"
    # DENY: nothing ran; the model got a readable error ToolMessage naming decision, reason and receipt
    deny = msgs["c-deny"]
    assert isinstance(deny, ToolMessage) and deny.status == "error"
    assert "aarmor DENY" in deny.content and "shell commands are not allowed" in deny.content
    sid = "lg_t1"
    bodies = verify(guard, sid)
    denied = next(b for b in bodies if b["action"]["tool"] == "shell")
    assert denied["receipt_id"] in deny.content and denied["enforcement"]["executed"] is False
    # the model's next turn was given that denial
    assert any(isinstance(m, ToolMessage) and m.tool_call_id == "c-deny" and "aarmor DENY" in m.content
               for m in model.seen[3])
    # one receipt per decision (plus the deferral's first receipt), every executed one with its outcome
    results = [(b["action"]["tool"], b["decision"]["result"], b["enforcement"]["result"], b["enforcement"]["executed"])
               for b in bodies]
    assert results == [("search", "ALLOW", "ALLOW", True), ("search", "MODIFY", "MODIFY", True),
                       ("shell", "DENY", "DENY", False), ("transfer", "STEP_UP", "ALLOW", True),
                       ("rotate", "DEFER", "DEFER", False), ("rotate", "DEFER", "ALLOW", True)]
    assert bodies[1]["modification"]["modified_parameters"]["limit"] == 10
    assert bodies[3]["approval"]["approver"] == "carol@company.com" and bodies[3]["approval"]["granted"] is True
    assert bodies[5]["deferral"]["resolution_method"] == "context_supplied"
    assert all(b["execution"]["success"] for b in bodies if b["enforcement"]["executed"])
    # the session is the thread's, and its original request is the first human message
    log = list(guard.store.read_log(sid))
    assert log[0].body["original_request"] == ASK["messages"][0]["content"]


def test_all_five_decisions_sync(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent, model, _ = _agent(guard, tools, *_five_turns())
    approver = _decide_when_pending(guard, granted=True)
    supplier = _supply_when_pending(guard, maintenance_window="open")  # after the approval: one at a time
    result = agent.invoke(ASK, {"configurable": {"thread_id": "t1"}})
    approver.join()
    supplier.join()
    _check_five(guard, tools, model, result)
    assert result["messages"][-1].content == "all done"


def test_all_five_decisions_async(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent, model, _ = _agent(guard, tools, *_five_turns())
    approver = _decide_when_pending(guard, granted=True)
    supplier = _supply_when_pending(guard, maintenance_window="open")
    result = asyncio.run(agent.ainvoke(ASK, {"configurable": {"thread_id": "t1"}}))
    approver.join()
    supplier.join()
    _check_five(guard, tools, model, result)


def test_step_up_denied_by_the_approver_is_a_readable_denial(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent, _, _ = _agent(guard, tools, call("transfer", {"amount": 9000, "to": "acme"}, "c1"), done())
    approver = _decide_when_pending(guard, granted=False)
    result = agent.invoke(ASK, {"configurable": {"thread_id": "t1"}})
    approver.join()
    assert tools.ran == []
    msg = by_call(result)["c1"]
    assert msg.status == "error" and "aarmor DENY" in msg.content and "STEP_UP not granted" in msg.content
    [body] = verify(guard, "lg_t1")
    assert body["approval"]["granted"] is False and body["receipt_id"] in msg.content


def test_defer_that_times_out_is_denied(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard, defer_timeout=0.3)
    tools = Tools()
    agent, _, _ = _agent(guard, tools, call("purge", {"cache": "cdn"}, "c1"), done())
    result = agent.invoke(ASK, {"configurable": {"thread_id": "t1"}})
    assert tools.ran == []
    msg = by_call(result)["c1"]
    assert msg.status == "error" and "DEFER not resolved" in msg.content and "timeout" in msg.content
    bodies = verify(guard, "lg_t1")
    assert [b["kind"] for b in bodies] == ["deferral", "resolution"]
    assert bodies[1]["deferral"]["resolution_method"] == "timeout" and bodies[1]["enforcement"]["result"] == "DENY"


def test_redacted_output_reaches_the_model_redacted(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent, model, _ = _agent(guard, tools, call("lookup", {"customer": "bob"}, "c1"), done())
    msgs = by_call(agent.invoke(ASK, {"configurable": {"thread_id": "t1"}}))
    # MODIFY of the output: the model reads the redacted content, never the card number
    assert "4111" not in msgs["c1"].content and "REDACTED" in msgs["c1"].content
    assert len(model.seen) == 2 and not any("4111" in str(m.content) for turn in model.seen for m in turn)
    [body] = verify(guard, "lg_t1")
    assert body["execution"]["output_redaction"]["redacted"] == 1
    assert tools.ran == [("lookup", {"customer": "bob"})]


def test_a_tool_that_raises_is_recorded_as_failed_and_its_error_propagates(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent, _, _ = _agent(guard, tools, call("flaky", {"x": 1}, "c1"), done())
    # create_agent's tool node does not catch arbitrary tool errors: the door leaves that to LangChain
    with pytest.raises(ValueError, match="backend unavailable"):
        agent.invoke(ASK, {"configurable": {"thread_id": "t1"}})
    [body] = verify(guard, "lg_t1")
    assert body["enforcement"]["executed"] is True and body["execution"]["success"] is False
    assert "backend unavailable" in body["execution"]["error"]


def test_one_session_per_thread_with_its_own_original_request(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    agent, _, door = _agent(guard, tools, call("search", {"query": "a"}, "c1"), done(),
                            call("search", {"query": "b"}, "c2"), done(), call("search", {"query": "c"}, "c3"),
                            done())
    agent.invoke({"messages": [{"role": "user", "content": "first thread"}]}, {"configurable": {"thread_id": "a"}})
    agent.invoke({"messages": [{"role": "user", "content": "second thread"}]}, {"configurable": {"thread_id": "b"}})
    agent.invoke({"messages": [{"role": "user", "content": "more"}]}, {"configurable": {"thread_id": "a"}})
    assert [b["action"]["parameters"]["query"] for b in verify(guard, "lg_a")] == ["a", "c"]
    assert [b["action"]["parameters"]["query"] for b in verify(guard, "lg_b")] == ["b"]
    assert next(guard.store.read_log("lg_a")).body["original_request"] == "first thread"
    assert next(guard.store.read_log("lg_b")).body["original_request"] == "second thread"
    # a new middleware (another process, a restart) resumes a thread's session from the store: one chain
    later = AarmorMiddleware(guard, ALICE).session_for(_request_in_thread("b"))
    assert later.session_id == "lg_b" and later.invoke("search", {"query": "d"}, lambda a: "ok") == "ok"
    assert [b["action"]["parameters"]["query"] for b in verify(guard, "lg_b")] == ["b", "d"]
    # closed sessions stay closed: a thread whose session ended cannot be mediated in it again
    door.close()
    again = AarmorMiddleware(guard, ALICE)
    with pytest.raises(InputError, match="has ended"):
        again.session_for(_request_in_thread("a"))


def test_errors_on_the_way_to_a_decision_fail_closed(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    too_big = "x" * (guard.config.limits.max_argument_bytes + 1)
    agent, _, _ = _agent(guard, tools, call("search", {"query": too_big}, "c1"), done())
    result = agent.invoke(ASK, {"configurable": {"thread_id": "t1"}})
    msg = by_call(result)["c1"]
    assert tools.ran == [] and msg.status == "error" and "fail closed" in msg.content
    [body] = verify(guard, "lg_t1")  # recorded: a DENY receipt with the error
    assert body["enforcement"]["result"] == "DENY" and body["error"]["class"] == "LimitExceeded"
    # a session that cannot even be opened (request over the limit): denied, nothing runs
    long_ask = {"messages": [{"role": "user", "content": "y" * (guard.config.limits.max_request_chars + 1)}]}
    agent2, _, _ = _agent(guard, tools, call("search", {"query": "x"}, "c2"), done())
    msg2 = by_call(agent2.invoke(long_ask, {"configurable": {"thread_id": "t2"}}))["c2"]
    assert tools.ran == [] and msg2.status == "error" and "fail closed: LimitExceeded" in msg2.content


def test_a_given_session_is_used_for_every_call(make_guard: Callable[..., Any]) -> None:
    guard = guard_for(make_guard)
    tools = Tools()
    session = guard.session(identity=Identity(human="bob@company.com"), original_request="look things up")
    model = ScriptedChatModel(messages=script(call("search", {"query": "a"}, "c1"), done()))
    agent = create_agent(model, tools=tools.all, middleware=[AarmorMiddleware(guard, session=session)])
    agent.invoke(ASK)
    [body] = receipts(guard, session.session_id)
    assert body["action"]["requester_context"]["human"] == "bob@company.com"
    with pytest.raises(TypeError, match="exactly one"):
        AarmorMiddleware(guard, ALICE, session=session)


def _request_in_thread(thread: str) -> Any:
    from langgraph.prebuilt.tool_node import ToolCallRequest

    class _Runtime:
        def __init__(self) -> None:
            self.config = {"configurable": {"thread_id": thread}}

    return ToolCallRequest(tool_call={"name": "search", "args": {}, "id": "x", "type": "tool_call"}, tool=None,
                           state={"messages": []}, runtime=_Runtime())  # type: ignore[arg-type]
