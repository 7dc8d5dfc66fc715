"""Shared pieces for the LangChain door tests: a scripted chat model, tools with observable side effects, a policy.

`ScriptedChatModel` stands in for an LLM (none can run here): it is LangChain's own `GenericFakeChatModel`,
which replays the AI messages it is given, plus the `bind_tools` that `create_agent` calls (it returns the same
model: the scripted messages already carry their tool calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool
from pydantic import Field

from aarmor import Identity


class ScriptedChatModel(GenericFakeChatModel):
    """LangChain's fake chat model with `bind_tools`: stands in for an LLM in these tests. `seen` keeps the
    messages each turn was given, so a test can show what the model read (a denial, a tool result)."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def script(*turns: AIMessage) -> Iterator[AIMessage]:
    return iter(list(turns))


def call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    """An AI turn that asks for one tool call."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


def done(text: str = "done") -> AIMessage:
    return AIMessage(content=text)


def tool_messages(result: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


def by_call(result: dict[str, Any]) -> dict[str, BaseMessage]:
    return {m.tool_call_id: m for m in tool_messages(result)}


class Tools:
    """Real LangChain tools whose side effects the tests observe (`ran`)."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []
        ran = self.ran

        @tool
        def search(query: str, limit: int = 5) -> str:
            """Search the knowledge base."""
            ran.append(("search", {"query": query, "limit": limit}))
            return f"{limit} results for {query}"

        @tool
        def shell(command: str) -> str:
            """Run a shell command."""
            ran.append(("shell", {"command": command}))
            return "ran"

        @tool
        def transfer(amount: int, to: str) -> str:
            """Transfer money."""
            ran.append(("transfer", {"amount": amount, "to": to}))
            return f"sent {amount} to {to}"

        @tool
        def rotate(service: str) -> str:
            """Rotate a service's credentials."""
            ran.append(("rotate", {"service": service}))
            return f"rotated {service}"

        @tool
        def lookup(customer: str) -> str:
            """Look a customer up (returns a card number, which policy redacts)."""
            ran.append(("lookup", {"customer": customer}))
            return f"{customer}: card 4111 1111 1111 1111"

        @tool
        def purge(cache: str) -> str:
            """Purge a cache."""
            ran.append(("purge", {"cache": cache}))
            return f"purged {cache}"

        @tool
        def flaky(x: int) -> str:
            """A tool that fails."""
            ran.append(("flaky", {"x": x}))
            raise ValueError("backend unavailable")

        self.all = [search, shell, transfer, rotate, lookup, purge, flaky]


POLICY = """
policy: {id: langchain-door, version: "1", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: shell}
    action: DENY
    reason: shell commands are not allowed for this agent
  - id: cap-search
    match: {tool: search, parameters: {limit: {gt: 10}}}
    action: MODIFY
    modifications: {parameters: {limit: 10}}
    reason: searches are capped at 10 results
  - id: big-transfer
    match: {tool: transfer, parameters: {amount: {gt: 1000}}}
    action: STEP_UP
    approvers: [finance]
    timeout: 20
    reason: transfers over 1000 need finance
  - id: rotate-needs-window
    match: {tool: rotate, context: {maintenance_window: {ne: open}}}
    action: DEFER
    context_needed: [maintenance_window]
    timeout: 20
    reason: rotation waits for the maintenance window
  - id: purge-needs-confirmation
    match: {tool: purge, context: {purge_confirmed: {ne: true}}}
    action: DEFER
    context_needed: [purge_confirmed]
    reason: a purge needs a confirmation
  - id: scrub-lookup
    match: {tool: lookup}
    action: MODIFY
    modifications: {redact_output: [FINANCIAL]}
    reason: the agent does not need card numbers
"""

GROUPS = (("finance", ("carol@company.com", "dan@company.com")),)

ALICE = Identity(human="alice@company.com", agent="support-agent", roles=["support"])


def guard_for(make_guard: Callable[..., Any], *, defer_timeout: float = 300.0) -> Any:
    """A real Guard (SQLite in tmp_path) on POLICY, with a finance group and quick polling. `defer_timeout`:
    a DEFER for context that is not populated yet waits `deferrals.default_timeout` (not the rule's timeout)."""
    from aarmor.config import ApprovalsConfig, DeferralsConfig

    return make_guard(POLICY, approvals=ApprovalsConfig(groups=GROUPS, poll_interval=0.02),
                      deferrals=DeferralsConfig(poll_interval=0.02, default_timeout=defer_timeout))


def when(fn: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Wait until `fn()` is truthy (the pattern of tests/conformance: a bounded check, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def receipts(guard: Any, sid: str) -> list[dict[str, Any]]:
    return [r.body for r in guard.store.read_receipts(sid)]


def verify(guard: Any, sid: str) -> list[dict[str, Any]]:
    """Every receipt of the session verifies (signatures, chain) and so does its context log."""
    from aarmor.context import check_chain
    from aarmor.receipts import verify_receipts

    bodies = receipts(guard, sid)
    report = verify_receipts(bodies, guard.keyring.public_keys())
    assert report.ok, report.failures
    assert not check_chain(list(guard.store.read_log(sid)), session_id=sid).failures
    return bodies
