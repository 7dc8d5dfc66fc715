"""`AgentsDoor`: OpenAI Agents SDK function tools and tool guardrails in front of `Session.ainvoke`.

Two ways in, both translating a tool call (name + JSON arguments) into one mediated action:

- `door.tool(t)` / `door.protect(agent)` replace a `FunctionTool`'s `on_invoke_tool` with one that hands the
  call to `Session.ainvoke`; the tool's own body runs as the `execute` callback. All five decisions are
  enforced (MODIFY: the body gets the modified arguments; STEP_UP/DEFER: awaited, timeout is DENY), and the
  receipt records the real execution: arguments run, output digest, or the tool's exception.
- `door.guardrails()` is the SDK-idiomatic pair (`ToolInputGuardrail`, `ToolOutputGuardrail`); see
  `guardrails.py` for what it can and cannot record.

A denial is returned to the model as the tool's output (`messages.denial_message`), so the loop goes on;
nothing is raised into the run. The door never decides: every outcome comes from the mediator.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from agents import Agent, FunctionTool, Runner
from agents.tool import maybe_invoke_function_tool_failure_error_function

from aarmor.adapters.openai_agents.messages import (
    denial_message,
    failure_message,
    first_user_message,
    withheld_message,
)
from aarmor.adapters.sdk import Session, current_session
from aarmor.errors import ActionDenied, OutputWithheld

if TYPE_CHECKING:  # pragma: no cover
    from agents import RunResult, ToolInputGuardrail, ToolOutputGuardrail
    from agents.tool_context import ToolContext

    from aarmor.guard import Guard
    from aarmor.model import Identity

__all__ = ["AgentsDoor", "ModifyNotEnforceable"]

#: set on a FunctionTool this door produced, so protecting twice does not mediate twice
_WRAPPED_BY = "__aarmor_door__"

Invoke = Callable[["ToolContext[Any]", str], Awaitable[Any]]


class ModifyNotEnforceable(Exception):
    """A guardrail was asked to run a tool with MODIFY's changed arguments, which the SDK does not allow."""


class AgentsDoor:
    """Mediates an OpenAI Agents SDK agent's tool calls through aarmor.

    Args:
        guard: the open `Guard` (policy, store, signer) every call goes through.
        identity: who acts (agent, human principal, roles) in the sessions this door opens.
        original_request: the user's request for intent checks; by default each run's first user message.
        session: an aarmor session to use for every call (the caller opens and closes it). Without one,
            the session bound by `with guard.session(...)` / `door.run(...)` is used, and failing that the
            door opens one per agent run (closed by `door.close()`).
        guardrail_output_timeout: guardrail pair only: seconds the input guardrail's action waits for
            the output guardrail to report the tool's output before recording the execution as failed.
    """

    def __init__(self, guard: Guard, *, identity: Identity, original_request: str | None = None,
                 session: Session | None = None, guardrail_output_timeout: float = 600.0) -> None:
        if guardrail_output_timeout <= 0:
            raise ValueError(f"guardrail_output_timeout must be > 0, found {guardrail_output_timeout!r}")
        self.guard = guard
        self.identity = identity
        self.original_request = original_request
        self._session = session
        self._lock = threading.Lock()
        #: sessions this door opened, one per agent run: id(run's Usage) -> (weak ref to it, session)
        self._runs: dict[int, tuple[weakref.ref[Any], Session]] = {}
        self.guardrail_output_timeout = guardrail_output_timeout

    # --- sessions ---------------------------------------------------------------------------------
    def session_for(self, ctx: Any) -> Session:
        """The aarmor session a tool call in run context `ctx` belongs to (see the class docstring).

        A run is recognised by its `RunContextWrapper.usage` object, which the SDK shares between the run
        and every `ToolContext` it makes, so all the calls of one run share one session (context, risk,
        receipt chain). Its original request is the run's first user message unless the door has one.
        """
        if self._session is not None:
            return self._session
        try:
            return current_session()
        except RuntimeError:
            pass  # no session bound here: the door opens one for this run
        usage = getattr(ctx, "usage", None)
        if usage is None:
            raise RuntimeError("the tool context carries no run (`usage`): cannot tell which run this call is in")
        with self._lock:
            self._drop_finished_runs()
            entry = self._runs.get(id(usage))
            if entry is not None and entry[0]() is usage:
                return entry[1]
            request = self.original_request or first_user_message(getattr(ctx, "turn_input", None))
            session = self.guard.session(identity=self.identity, original_request=request)
            self._runs[id(usage)] = (weakref.ref(usage), session)
            return session

    def _drop_finished_runs(self) -> None:
        """Close the sessions of runs whose context is gone (their `Usage` was collected)."""
        for key, (ref, session) in list(self._runs.items()):
            if ref() is None:
                del self._runs[key]
                session.close()

    def close(self) -> None:
        """Close every session this door opened for a run. Idempotent."""
        with self._lock:
            runs, self._runs = self._runs, {}
        for _, session in runs.values():
            session.close()

    def __enter__(self) -> AgentsDoor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def run(self, agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """`Runner.run(self.protect(agent), input, **kwargs)` inside one aarmor session.

        The session's original request is the door's, else the input's first user message; it is closed
        when the run ends, however it ends. With `session=` given to the door, that session is used as is.
        """
        agent = self.protect(agent)
        if self._session is not None:
            return await Runner.run(agent, input, **kwargs)
        request = self.original_request or first_user_message(input)
        with self.guard.session(identity=self.identity, original_request=request):
            return await Runner.run(agent, input, **kwargs)

    # --- the wrapper ------------------------------------------------------------------------------
    def protect(self, agent: Agent[Any]) -> Agent[Any]:
        """A clone of `agent` whose function tools are all mediated (`door.tool`), handoff agents included.

        Raises:
            TypeError: the agent has a tool aarmor cannot mediate here (a hosted tool such as web search
                runs on the model provider's side, a computer/shell tool has no function body): remove it,
                or mediate it another way. MCP servers are not touched: point them at `aarmor gateway`.
        """
        return self._protect(agent, {})

    def _protect(self, agent: Agent[Any], seen: dict[int, Agent[Any]]) -> Agent[Any]:
        if id(agent) in seen:
            return seen[id(agent)]
        others = [t for t in agent.tools if not isinstance(t, FunctionTool)]
        if others:
            names = ", ".join(f"`{getattr(t, 'name', type(t).__name__)}` ({type(t).__name__})" for t in others)
            raise TypeError(f"agent `{agent.name}` has tools aarmor cannot mediate as function tools: {names}")
        clone = agent.clone(tools=[self.tool(t) for t in agent.tools if isinstance(t, FunctionTool)])
        seen[id(agent)] = clone
        handoffs: list[Any] = []
        for h in agent.handoffs:  # an Agent handed off to acts with its own tools: protect them too
            handoffs.append(self._protect(h, seen) if isinstance(h, Agent) else h)
        clone.handoffs = handoffs
        return clone

    def tool(self, tool: FunctionTool) -> FunctionTool:
        """A copy of `tool` whose every call is mediated; the original is left unchanged."""
        if not isinstance(tool, FunctionTool):
            raise TypeError(f"expected an agents.FunctionTool, found {type(tool).__name__}")
        if getattr(tool, _WRAPPED_BY, None) is self or any(
                getattr(g, _WRAPPED_BY, None) is self for g in tool.tool_input_guardrails or ()):
            return tool  # already mediated by this door (wrapper or guardrails): never twice
        # The function_tool invoker turns the body's exceptions into text for the model; aarmor must see
        # the exception itself to record a failed execution, so the body is called beneath that handler
        # and the tool's failure policy is applied afterwards (`_mediate`), as the SDK would.
        body: Invoke = getattr(tool.on_invoke_tool, "_invoke_tool_impl", tool.on_invoke_tool)
        name = tool.qualified_name
        holder: list[FunctionTool] = []

        async def on_invoke_tool(ctx: ToolContext[Any], args_json: str) -> Any:
            return await self._mediate(holder[0], name, body, ctx, args_json)

        wrapped = dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)
        holder.append(wrapped)
        setattr(wrapped, _WRAPPED_BY, self)
        return wrapped

    async def _mediate(self, tool: FunctionTool, name: str, body: Invoke, ctx: ToolContext[Any],
                       args_json: str) -> Any:
        try:
            session = self.session_for(ctx)
        except Exception as exc:  # AARM R1: no session, no decision, no execution
            return failure_message(name, exc)

        started: list[bool] = []
        raised: list[BaseException] = []

        async def execute(arguments: dict[str, Any]) -> Any:
            started.append(True)
            try:
                return await body(ctx, json.dumps(arguments))
            except BaseException as exc:  # the receipt records it as the tool's own failure
                raised.append(exc)
                raise

        try:
            return await session.ainvoke(name, parse_arguments(args_json), execute)
        except ActionDenied as exc:
            return denial_message(name, exc)
        except OutputWithheld as exc:
            return withheld_message(name, exc)
        except Exception as exc:
            if not started:  # the pipeline refused the call itself (a closed session): nothing ran
                return failure_message(name, exc)
            if not raised or exc is not raised[0]:
                raise  # not the tool's: e.g. a StoreError after the tool ran (the caller must know)
            # recorded by aarmor as a failed execution; now what the SDK does with a tool's exception
            handled = await maybe_invoke_function_tool_failure_error_function(
                function_tool=tool, context=ctx, error=exc)
            if handled is None:
                raise
            return handled

    # --- the guardrail pair -----------------------------------------------------------------------
    def guardrails(self) -> tuple[ToolInputGuardrail[Any], ToolOutputGuardrail[Any]]:
        """The tool input and output guardrails (use both, on the same tools). See guardrails.py."""
        from aarmor.adapters.openai_agents.guardrails import make_guardrails

        pair = make_guardrails(self)
        for g in pair:
            setattr(g, _WRAPPED_BY, self)
        return pair

    def with_guardrails(self, tools: Sequence[FunctionTool]) -> list[FunctionTool]:
        """Copies of `tools` with the guardrail pair added to their own guardrails."""
        inp, out = self.guardrails()
        return [dataclasses.replace(t, tool_input_guardrails=[*(t.tool_input_guardrails or []), inp],
                                    tool_output_guardrails=[*(t.tool_output_guardrails or []), out])
                for t in tools]


def parse_arguments(args_json: str) -> Any:
    """The model's JSON arguments as a dict. Anything else is passed on as it is, so the mediator denies
    it (fail closed, recorded) naming what was wrong, rather than the door dropping it unrecorded."""
    if not args_json:
        return {}  # the SDK sends "" for a tool without parameters
    try:
        return json.loads(args_json)
    except ValueError:
        return args_json
