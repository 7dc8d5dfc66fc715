"""Translation between LangChain tool calls and aarmor: arguments in, ToolMessages out. Decides nothing."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from aarmor.errors import ActionDenied, ToolFailed

__all__ = ["action_id_for", "denial", "first_human_text", "messages_of", "recorded_output", "thread_key",
           "with_args"]

_SAFE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def messages_of(state: Any) -> list[Any]:
    """The agent state's `messages` (a dict state, or a model with a `messages` attribute)."""
    found = state.get("messages") if isinstance(state, Mapping) else getattr(state, "messages", None)
    return list(found) if isinstance(found, list | tuple) else []


def first_human_text(state: Any) -> str | None:
    """The text of the first human message: the request the user made, for the session's intent."""
    for m in messages_of(state):
        if isinstance(m, HumanMessage):
            return m.text
    return None


def thread_key(request: ToolCallRequest) -> str | None:
    """The LangGraph thread of this call (`configurable.thread_id`), else the conversation's first human
    message id (stable across runs that pass the history), else None."""
    config = getattr(request.runtime, "config", None) or {}
    thread = (config.get("configurable") or {}).get("thread_id")
    if thread is not None and str(thread):
        return "thread:" + str(thread)
    for m in messages_of(request.state):
        if isinstance(m, HumanMessage) and m.id:
            return "message:" + str(m.id)
    return None


def session_id_for(prefix: str, key: str) -> str:
    """A session id for a thread key: readable when the key is plain, else a digest of it."""
    kind, _, value = key.partition(":")
    if kind == "thread" and _SAFE.fullmatch(value):
        return f"{prefix}{value}"
    return f"{prefix}{kind}_{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def action_id_for(request: ToolCallRequest) -> str:
    """The aarmor action id of a tool call, the same on every (re-)execution of the LangGraph node: derived
    from the tool call id and the id of the AI message that made it (checkpointed state, so stable).

    Raises:
        ValueError: the tool call has no id (it could not be matched on resume).
    """
    call_id = request.tool_call.get("id")
    if not call_id:
        raise ValueError("the tool call has no id; interrupt mode needs one to resume the same action")
    message_id = ""
    for m in reversed(messages_of(request.state)):
        if isinstance(m, AIMessage) and any(tc.get("id") == call_id for tc in m.tool_calls):
            message_id = str(m.id or "")
            break
    return "lc_" + hashlib.sha256(f"{message_id}\x00{call_id}".encode()).hexdigest()[:40]


def with_args(request: ToolCallRequest, args: dict[str, Any]) -> ToolCallRequest:
    """The request with the arguments aarmor allowed (the modified ones on MODIFY)."""
    return request.override(tool_call={**request.tool_call, "args": args})


def recorded_output(result: ToolMessage | Command[Any] | Any) -> Any:
    """What aarmor records (and may redact) as the tool's output: the ToolMessage content.

    A LangGraph `Command` (a tool that updates state) is recorded as the contents of the messages it adds,
    its state keys and its goto. Raises `ToolFailed` (the tool ran and failed; its output still reaches the
    model) for a ToolMessage with status "error", so the receipt records a failed execution.
    """
    if isinstance(result, ToolMessage):
        if result.status == "error":
            raise ToolFailed(f"tool `{result.name}` reported an error", result.content)
        return result.content
    if isinstance(result, Command):
        update = result.update if isinstance(result.update, Mapping) else {}
        messages = update.get("messages") or []
        return {"langgraph_command": {
            "messages": [m.content if isinstance(m, BaseMessage) else str(m) for m in messages],
            "update_keys": sorted(str(k) for k in update), "goto": str(result.goto) if result.goto else None}}
    return str(result)


def delivered(request: ToolCallRequest, result: Any, recorded: Any, out: Any, *, failed: bool = False
              ) -> ToolMessage | Command[Any]:
    """The tool's result as the model gets it: unchanged, or with the content aarmor redacted
    (`redact_output`); a redacted `Command` cannot be rebuilt safely, so it is withheld."""
    if out is recorded:
        return result  # type: ignore[no-any-return]
    if isinstance(result, ToolMessage):
        return result.model_copy(update={"content": out, "status": "error" if failed else result.status})
    return error_message(request, "aarmor withheld the output of this tool call: its output had to be redacted "
                                  "and a LangGraph Command cannot be redacted.")


def denial(request: ToolCallRequest, exc: ActionDenied) -> ToolMessage:
    """A denial the model can read: the decision, the reason, the receipt, and that nothing ran."""
    d = exc.decision
    return error_message(request, f"aarmor {d.result.value}: the tool call `{request.tool_call.get('name')}` "
                                  f"was not executed. Reason: {d.reason} (receipt {exc.receipt_id}).")


def error_message(request: ToolCallRequest, text: str) -> ToolMessage:
    return ToolMessage(content=text, tool_call_id=str(request.tool_call.get("id") or ""),
                       name=request.tool_call.get("name"), status="error")
