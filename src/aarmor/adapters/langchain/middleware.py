"""`AarmorMiddleware`: a LangChain 1.x agent middleware that hands every tool call to aarmor's one pipeline.

The door translates a `ToolCallRequest` into `Session.invoke` / `ainvoke` (tool name, JSON arguments) and the
outcome back into what the agent expects: the tool's ToolMessage (run through `execute`, so the receipt
records it), or a ToolMessage with status "error" the model can read when aarmor did not let it run. It never
decides: ALLOW, MODIFY, DENY, STEP_UP and DEFER all come from the PDP through the mediator.

Sessions: one aarmor session per LangGraph thread (`configurable.thread_id`), opened (or resumed from the
store, so a thread keeps its session across processes) on the thread's first tool call, with the thread's
first human message as the original request. Without a thread id, the conversation's first human message id
keys the session. A `session=` given to the middleware is used for every call instead.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain_core.messages import ToolMessage
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from aarmor.adapters.langchain import translate as T
from aarmor.errors import ActionDenied, OutputWithheld, ToolFailed
from aarmor.model import Identity

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.langchain.interrupts import Flights
    from aarmor.adapters.sdk import Session
    from aarmor.guard import Guard

__all__ = ["AarmorMiddleware"]

Result = ToolMessage | Command[Any]


class _Box:
    """What the handler returned inside `execute`, and what was handed to aarmor as its output."""

    called = False
    result: Any = None
    recorded: Any = None


class AarmorMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """Mediate every tool call of a `create_agent` agent through aarmor.

    Args:
        guard: the aarmor runtime (`aarmor.Guard.open(...)`).
        identity: who the agent acts for; the middleware opens one session per LangGraph thread with it.
        session: instead of `identity`, one session (from `guard.session(...)`) for every call.
        tool_names: LangChain tool name -> aarmor tool name (`send_email` -> `email.send`); others as they are.
        interrupts: map STEP_UP and DEFER onto LangGraph interrupts (needs a checkpointer) instead of blocking
            until aarmor's approvers or context resolve them. See docs/frameworks-langchain.md.
        session_prefix: prefix of the session ids derived from thread ids.
        resume_timeout: interrupt mode: how long (s) an action granted while its graph is paused waits for
            the graph to be resumed so the tool can run.
        poll_interval: interrupt mode: how often (s) the store is read for a new approval or deferral.
    """

    def __init__(self, guard: Guard, identity: Identity | None = None, *, session: Session | None = None,
                 tool_names: Mapping[str, str] | None = None, interrupts: bool = False,
                 session_prefix: str = "lg_", resume_timeout: float = 3600.0, poll_interval: float = 0.05) -> None:
        super().__init__()
        from aarmor.guard import Guard

        if not isinstance(guard, Guard):
            raise TypeError(f"guard must be an aarmor.Guard, found {type(guard).__name__}")
        if (identity is None) == (session is None):
            raise TypeError("give exactly one of identity= (a session per thread) or session= (one session)")
        if identity is not None and not isinstance(identity, Identity):
            raise TypeError(f"identity must be an aarmor.Identity, found {type(identity).__name__}")
        if not isinstance(interrupts, bool):
            raise TypeError("interrupts must be True or False")
        for name, value in (("resume_timeout", resume_timeout), ("poll_interval", poll_interval)):
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, found {value!r}")
        self.guard = guard
        self._identity = identity
        self._fixed = session
        self._names = dict(tool_names or {})
        self._prefix = session_prefix
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self.interrupts = interrupts
        self._flights: Flights | None = None
        if interrupts:
            from aarmor.adapters.langchain.interrupts import Flights

            self._flights = Flights(self, resume_timeout=float(resume_timeout), poll_interval=float(poll_interval))

    # --- sessions ------------------------------------------------------------------------------------
    def session_for(self, request: ToolCallRequest) -> Session:
        """The aarmor session of this call's thread (opened or resumed on first use).

        Raises:
            InputError / LimitExceeded: the first human message cannot be the original request.
            StoreError, ChainError, RuntimeError: the session cannot be opened or resumed.
        """
        if self._fixed is not None:
            return self._fixed
        key = T.thread_key(request) or "default:"
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                assert self._identity is not None
                session = self.guard.session(identity=self._identity, original_request=T.first_human_text(
                    request.state), session_id=T.session_id_for(self._prefix, key))
                self._sessions[key] = session
            return session

    def close(self) -> None:
        """End every session this middleware opened (each is logged as ended; a thread used later gets a
        `session ... has ended` denial). A `session=` you passed is yours to close."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            s.close()

    def tool_name(self, request: ToolCallRequest) -> str:
        name = str(request.tool_call.get("name") or "")
        return self._names.get(name, name)

    # --- the door ------------------------------------------------------------------------------------
    def wrap_tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Result]) -> Result:
        if self._flights is not None:
            return self._flights.run(request, handler)
        box = _Box()

        def execute(args: dict[str, Any]) -> Any:
            box.called = True
            box.result = handler(T.with_args(request, args))
            box.recorded = T.recorded_output(box.result)  # may raise ToolFailed: recorded as a failed run
            return box.recorded

        try:
            session = self.session_for(request)
            out = session.invoke(self.tool_name(request), _args(request), execute)
        except Exception as exc:
            return self.outcome(request, box, exc)
        return T.delivered(request, box.result, box.recorded, out)

    async def awrap_tool_call(self, request: ToolCallRequest,
                              handler: Callable[[ToolCallRequest], Awaitable[Result]]) -> Result:
        if self._flights is not None:
            return await self._flights.arun(request, handler)
        box = _Box()

        async def execute(args: dict[str, Any]) -> Any:
            box.called = True
            box.result = await handler(T.with_args(request, args))
            box.recorded = T.recorded_output(box.result)
            return box.recorded

        try:
            session = self.session_for(request)
            out = await session.ainvoke(self.tool_name(request), _args(request), execute)
        except Exception as exc:
            return self.outcome(request, box, exc)
        return T.delivered(request, box.result, box.recorded, out)

    def outcome(self, request: ToolCallRequest, box: _Box, exc: Exception) -> Result:
        """What the model gets when `invoke` raised: a readable denial, the failed tool's (redacted) output,
        or (the tool's own exception, or LangGraph's control flow) the exception itself."""
        if isinstance(exc, GraphBubbleUp):
            raise exc
        if isinstance(exc, ActionDenied):
            return T.denial(request, exc)
        if isinstance(exc, OutputWithheld):
            return T.error_message(request, f"aarmor withheld the output of this tool call: {exc.reason} "
                                            f"(receipt {exc.receipt_id}).")
        if box.called and isinstance(exc, ToolFailed) and box.recorded is None:
            return T.delivered(request, box.result, _content(box.result), exc.output, failed=True)
        if box.called:
            raise exc  # the tool's own failure, recorded by aarmor: LangChain's error handling takes it
        # an error on the way to a decision (the session could not be opened, a closed session): fail closed
        return T.error_message(request, f"aarmor DENY: the tool call `{request.tool_call.get('name')}` was not "
                                        f"executed. Reason: fail closed: {type(exc).__name__}: {exc}.")


def _args(request: ToolCallRequest) -> Any:
    return request.tool_call.get("args")


def _content(result: Any) -> Any:
    return result.content if isinstance(result, ToolMessage) else None
