"""Shared pieces for the LangChain door tests: a scripted chat model, tools with observable side effects, a policy.

`ScriptedChatModel` stands in for an LLM (none can run here): it is LangChain's own `GenericFakeChatModel`,
which replays the AI messages it is given, plus the `bind_tools` that `create_agent` calls (it returns the same
model: the scripted messages already carry their tool calls).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool

from aarmor import Identity


class ScriptedChatModel(GenericFakeChatModel):
    """LangChain's fake chat model with `bind_tools`: stands in for an LLM in these tests."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


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

        self.all = [search, shell, transfer, rotate, lookup]


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
"""

ALICE = Identity(human="alice@company.com", agent="support-agent", roles=["support"])
