"""Interrupt mode: STEP_UP and DEFER surface as LangGraph interrupts instead of blocking the tool node.

Why it is built this way. A LangGraph node that calls `interrupt()` ends; on `Command(resume=...)` it runs
again from the start. aarmor's pipeline, however, is one `Session.invoke` that records "requested", waits for
the approval or the context, and then runs the tool and records the outcome: cut in two, the action would be
recorded twice, or run on an approval nobody recorded. So each tool call gets one `Flight`:

- The `invoke` runs in a background thread for the whole life of the action, with an action id derived from
  the tool call (`translate.action_id_for`), so every re-execution of the node finds the same action.
- The node (first run and every resumed run) attaches to the flight and waits for what the pipeline needs:
  an approval or deferral the pipeline opened for this action (read from the store) becomes an interrupt whose
  payload names it; the resume value is handed to aarmor's own desk (`approvals.decide` /
  `deferrals.supply`, channel "langgraph"), which records it with the approver's name and decides nothing
  itself; when the pipeline lets the tool run, its `execute` asks the node to run the handler (in the node,
  so the tool sees this run's config, state and callbacks) and waits for the result; the outcome and receipt
  are written by the pipeline as usual.
- Interrupts are asked in a fixed order per flight (one per approval or deferral, and again after a refused
  answer), so a re-executed node replays the same `interrupt()` calls and LangGraph hands back the same
  resume values by index; an answer already handed over is never handed over twice.

Limits (docs/frameworks-langchain.md): the flight lives in this process, so a resume in another process (or
after a restart) cannot continue it: the model gets a denial and the earlier action ends in aarmor as every
abandoned wait does (DENY at its timeout, or at the next `Guard.open` once its lease ran out).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import interrupt

from aarmor.adapters.langchain import translate as T
from aarmor.credentials.model import binding, current
from aarmor.errors import InputError, Refused

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.langchain.middleware import AarmorMiddleware, Result
    from aarmor.adapters.sdk import Session

__all__ = ["CHANNEL", "Flights"]

log = logging.getLogger("aarmor.adapters.langchain")

#: the channel aarmor records for answers given through a LangGraph resume
CHANNEL = "langgraph"


@dataclass(eq=False)
class _Ask:
    """One interrupt of a flight: which approval or deferral it asks about, and whether it was answered."""

    kind: str
    item_id: str
    payload: dict[str, Any]
    handled: bool = False


@dataclass(eq=False)
class _Run:
    """The pipeline's request to run the tool with `args`, and the node's answer."""

    args: dict[str, Any]
    credential: Any
    taken: bool = False
    reply: tuple[str, Any] | None = None


@dataclass(eq=False)
class Flight:
    """One mediated tool call in interrupt mode, shared by every (re-)execution of its node."""

    session: Session
    action_id: str
    tool_call_id: str
    cond: threading.Condition = field(default_factory=threading.Condition)
    asks: list[_Ask] = field(default_factory=list)
    #: approvals and deferrals that need no (further) question: answered, or no longer pending
    settled: set[str] = field(default_factory=set)
    #: why the last answer about an item was not taken, shown in the next interrupt about it
    refusals: dict[str, str] = field(default_factory=dict)
    run: _Run | None = None
    outcome: tuple[str, Any] | None = None
    # what the handler returned and what aarmor recorded as output (see middleware._Box)
    called: bool = False
    result: Any = None
    recorded: Any = None


class Flights:
    """The flights of one middleware, keyed by (session id, action id)."""

    def __init__(self, door: AarmorMiddleware, *, resume_timeout: float, poll_interval: float) -> None:
        self._door = door
        self._resume_timeout = resume_timeout
        self._poll = poll_interval
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, str], Flight] = {}

    # --- the node's side -------------------------------------------------------------------------------
    def run(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Result]) -> Result:
        flight = self._attach(request)
        if not isinstance(flight, Flight):
            return flight
        done = 0  # asks walked in this execution of the node: replayed in the same order every time
        while True:
            kind, value = self._next(flight, done)
            if kind == "ask":
                answer = interrupt(value.payload)  # first time: the graph pauses; on resume: the answer
                if not value.handled:
                    self._hand_over(flight, value, answer)
                done += 1
            elif kind == "run":
                self._execute(flight, value, lambda args: handler(T.with_args(request, args)))
            else:
                return self._finish(request, flight)

    async def arun(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Result]]
                   ) -> Result:
        flight = await asyncio.to_thread(self._attach, request)
        if not isinstance(flight, Flight):
            return flight
        done = 0
        while True:
            kind, value = await asyncio.to_thread(self._next, flight, done)
            if kind == "ask":
                answer = interrupt(value.payload)
                if not value.handled:
                    await asyncio.to_thread(self._hand_over, flight, value, answer)
                done += 1
            elif kind == "run":
                await self._aexecute(flight, value, lambda args: handler(T.with_args(request, args)))
            else:
                return self._finish(request, flight)

    def _attach(self, request: ToolCallRequest) -> Flight | Result:
        """This tool call's flight: the running one, or a new one (its `invoke` started in a thread).

        Raises:
            RuntimeError: the graph has no checkpointer (an interrupt could never be resumed); nothing ran.
        """
        door = self._door
        configurable = (getattr(request.runtime, "config", None) or {}).get("configurable") or {}
        # LangGraph's own key for the run's checkpointer (langgraph._internal._constants.CONFIG_KEY_CHECKPOINTER)
        if configurable.get("__pregel_checkpointer") is None:
            raise RuntimeError("AarmorMiddleware(interrupts=True) needs a checkpointer so an interrupt can be "
                               "resumed: create_agent(..., checkpointer=...)")
        try:
            session = door.session_for(request)
            action_id = T.action_id_for(request)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # fail closed: no session, no action id, nothing runs
            return T.error_message(request, f"aarmor DENY: the tool call `{request.tool_call.get('name')}` was not "
                                            f"executed. Reason: fail closed: {type(exc).__name__}: {exc}.")
        key = (session.session_id, action_id)
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight
        # Not running here. If the store knows a wait for this action, an earlier process began it: its
        # approval or deferral cannot be continued here (its code and caller lived there), and starting
        # the action again would record it twice. The model is told; aarmor ends the old wait as DENY.
        earlier = [r for r in door.guard.store.pending_list(session_id=session.session_id) if r.action_id == action_id]
        if earlier:
            rec = earlier[-1]
            return T.error_message(request, (
                f"aarmor DENY: the tool call `{request.tool_call.get('name')}` was not executed. Reason: its "
                f"{rec.kind} `{rec.item_id}` ({rec.status}) was opened by a run that is no longer in this process "
                f"and cannot be resumed here; ask again to make a new request."))
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Flight(session, action_id, str(request.tool_call.get("id")))
                args = (flight, door.tool_name(request), request.tool_call.get("args"))
                threading.Thread(target=self._drive, args=args, name=f"aarmor-langgraph-{action_id}",
                                 daemon=True).start()
            return flight

    def _next(self, flight: Flight, done: int) -> tuple[str, Any]:
        """Block until the flight needs the node: ("ask", the next interrupt), ("run", the tool to run), or
        ("done", None). New approvals and deferrals are found by reading the store every `poll_interval`."""
        while True:
            with flight.cond:
                if flight.outcome is not None:
                    return "done", None
                if flight.run is not None and not flight.run.taken:
                    flight.run.taken = True
                    return "run", flight.run
                if done < len(flight.asks):
                    return "ask", flight.asks[done]
                flight.cond.wait(self._poll)
                if flight.outcome is not None or (flight.run is not None and not flight.run.taken):
                    continue
            self._discover(flight)

    def _discover(self, flight: Flight) -> None:
        """Add an ask for an approval or deferral of this action that is pending and not yet answered."""
        store = self._door.guard.store
        for rec in store.pending_list(session_id=flight.session.session_id, status="pending"):
            if rec.action_id != flight.action_id or rec.kind not in ("approval", "deferral"):
                continue
            with flight.cond:
                if rec.item_id in flight.settled:
                    continue
                flight.asks.append(_Ask(rec.kind, rec.item_id, self._payload(flight, rec.kind, rec.item_id)))
                flight.cond.notify_all()
            return

    def _payload(self, flight: Flight, kind: str, item_id: str) -> dict[str, Any]:
        """What the interrupt shows: the action, the decision, the reason, the item to answer and how."""
        guard = self._door.guard
        view = guard.approvals.get(item_id) if kind == "approval" else guard.deferrals.get(item_id)
        req = view.get("request") or {}
        payload: dict[str, Any] = {
            "aarmor": kind, "id": item_id, "action_id": flight.action_id, "tool_call_id": flight.tool_call_id,
            "session_id": flight.session.session_id, "tool": req.get("tool"), "operation": req.get("operation"),
            "parameters": req.get("parameters"), "decision": "STEP_UP" if kind == "approval" else "DEFER",
            "reason": req.get("reason") if kind == "approval" else view.get("reason"),
            "rule_id": req.get("rule_id"), "deadline": view.get("deadline"),
            "refused": flight.refusals.get(item_id),
        }
        if kind == "approval":
            payload.update(approvers=view.get("approvers", []), escalated=view.get("escalated", False),
                           answer={"approved": "true or false", "approver": "who decides", "reason": "why"})
        else:
            payload.update(context_needed=view.get("context_needed", []),
                           answer={"context": {"<field>": "<value>"}, "by": "who supplies it"})
        return payload

    def _hand_over(self, flight: Flight, ask: _Ask, answer: Any) -> None:
        """Give the resume value to aarmor's desk; a refused or malformed one is asked again (with why)."""
        guard = self._door.guard
        try:
            if not isinstance(answer, dict):
                raise InputError(f"the resume value must be a dict, found {type(answer).__name__}")
            if ask.kind == "approval":
                approved = answer.get("approved")
                if not isinstance(approved, bool):
                    raise InputError("`approved` must be true or false")
                reason = answer.get("reason") or ("approved" if approved else "denied") + " via LangGraph resume"
                guard.approvals.decide(ask.item_id, approver=_text(answer, "approver"), granted=approved,
                                       reason=str(reason), channel=CHANNEL)
            else:
                fields = answer.get("context")
                if not isinstance(fields, dict):
                    raise InputError("`context` must be a dict of the fields the deferral needs")
                guard.deferrals.supply(ask.item_id, fields, by=_text(answer, "by"), channel=CHANNEL)
            settled, why = True, None
        except Refused as exc:  # recorded on the item by the desk (self approval, not an approver, ...)
            settled, why = exc.code in ("not_pending", "expired"), f"{exc.code}: {exc}"
        except InputError as exc:
            settled, why = False, f"bad answer: {exc}"
        if why is not None:
            log.warning("aarmor: LangGraph answer for %s %s not taken: %s", ask.kind, ask.item_id, why)
        with flight.cond:
            ask.handled = True
            if settled:
                flight.settled.add(ask.item_id)
            if why is not None:
                flight.refusals[ask.item_id] = why
            flight.cond.notify_all()

    def _execute(self, flight: Flight, run: _Run, call: Callable[[dict[str, Any]], Any]) -> None:
        try:
            with binding(run.credential):  # the credential aarmor minted for this run (AARM R9)
                flight.called = True
                flight.result = call(run.args)
                reply = ("ok", self._record(flight))
        except BaseException as exc:  # handed to the pipeline, which records it and raises it back
            reply = ("exc", exc)
        self._reply(flight, run, reply)

    async def _aexecute(self, flight: Flight, run: _Run, call: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
        try:
            with binding(run.credential):
                flight.called = True
                flight.result = await call(run.args)
                reply = ("ok", self._record(flight))
        except BaseException as exc:
            reply = ("exc", exc)
        self._reply(flight, run, reply)

    @staticmethod
    def _record(flight: Flight) -> Any:
        flight.recorded = T.recorded_output(flight.result)
        return flight.recorded

    @staticmethod
    def _reply(flight: Flight, run: _Run, reply: tuple[str, Any]) -> None:
        with flight.cond:
            run.reply = reply
            flight.cond.notify_all()

    def _finish(self, request: ToolCallRequest, flight: Flight) -> Result:
        with self._lock:
            self._flights.pop((flight.session.session_id, flight.action_id), None)
        assert flight.outcome is not None
        kind, value = flight.outcome
        if kind == "ok":
            return T.delivered(request, flight.result, flight.recorded, value)
        if not isinstance(value, Exception):
            raise value  # a cancellation or interpreter exit reached the pipeline's thread
        box = _FlightBox(flight)
        return self._door.outcome(request, box, value)  # type: ignore[arg-type]

    # --- the pipeline's side (the flight's thread) -------------------------------------------------------
    def _drive(self, flight: Flight, tool: str, args: Any) -> None:
        try:
            out = flight.session.invoke(tool, args, lambda a: self._remote(flight, a), action_id=flight.action_id)
            outcome: tuple[str, Any] = ("ok", out)
        except BaseException as exc:  # ActionDenied, the tool's failure, a closed session: the node translates
            outcome = ("exc", exc)
        with flight.cond:
            flight.outcome = outcome
            flight.cond.notify_all()

    def _remote(self, flight: Flight, args: dict[str, Any]) -> Any:
        """`execute` for the pipeline: the node runs the tool. While the graph is paused (the approval was
        given in aarmor's CLI or page, or context came from a resolver), wait for it to be resumed."""
        run = _Run(args, current())
        with flight.cond:
            flight.run = run
            flight.cond.notify_all()
            if not flight.cond.wait_for(lambda: run.taken, timeout=self._resume_timeout):
                flight.run = None
                raise RuntimeError(f"the LangGraph run was not resumed within {self._resume_timeout:g} s: "
                                   "the tool did not run")
            flight.cond.wait_for(lambda: run.reply is not None)
            flight.run = None
        assert run.reply is not None
        kind, value = run.reply
        if kind == "exc":
            raise value
        return value


class _FlightBox:
    """A flight seen as the middleware's `_Box` (what the handler returned, what was recorded)."""

    def __init__(self, flight: Flight) -> None:
        self.called = flight.called
        self.result = flight.result
        self.recorded = flight.recorded


def _text(answer: dict[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"`{key}` must name who answers (a non-empty string)")
    return value
