"""The mediate protocol for agents in other languages: `POST /v1/sessions/{sid}/actions` and its outcome.

The HTTP client owns the tool, so the pipeline's `execute` callback cannot run it. Instead each action
runs `Session.invoke` in its own worker thread, and `execute(params)`:
1. publishes state `allowed` with the final (possibly MODIFY'd) parameters, then
2. blocks until the client reports the outcome (`POST /v1/actions/{id}/outcome`), returning the reported
   output (so the pipeline classifies it, AARM R2) or raising `RemoteToolError` for a reported failure;
3. if no report arrives by the outcome deadline (or the server stops), raises `OutcomeUnknown`, so the
   receipt records an execution whose outcome is unknown. Nothing executed goes unrecorded.

Rules:
- The HTTP resource id is the aarmor action id itself (chosen here, passed to `invoke`), so receipts,
  approvals, deferrals and the API all name the action the same way.
- A client may execute only after it has seen status `allowed`; every other status means "do not run".
- AARM R9: a tool configured under `credentials.tools` gets its just-in-time credential with status
  `allowed` (`credential`: the receipt's description plus `token` or `dsn`), shown to the action's owner
  only while it may run; the pipeline releases it once the outcome is reported (or its deadline passes).
- Only the principal that created the action (or an admin) may read it or report its outcome.
- In-flight actions are bounded (`max_in_flight`, 429 beyond it); finished ones are forgotten after an hour.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aarmor import errors
from aarmor.canonical import format_ts
from aarmor.credentials.model import Credential, current
from aarmor.errors import ActionDenied
from aarmor.normalize import new_action_id
from aarmor.server.desks import approvals, deferrals, receipts_of_action
from aarmor.server.http import ApiError
from aarmor.store import ApiToken

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.sdk import Session
    from aarmor.guard import Guard

__all__ = ["TERMINAL", "ActionHandle", "ActionRunner", "OutcomeUnknown", "RemoteToolError"]

#: statuses after which the state of an action no longer changes by itself (`allowed` waits for the client)
TERMINAL = frozenset({"allowed", "denied", "completed", "outcome_unknown", "error"})
KEEP_FINISHED = 3600.0


class RemoteToolError(Exception):
    """The client reported that the tool failed (recorded in the receipt's execution block)."""


class OutcomeUnknown(errors.OutcomeUnknown):
    """The client did not report an outcome in time: whether the tool ran is unknown (the receipt says
    `executed: "unknown"`, as for an action whose process ended)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    success: bool
    output: Any
    error: str | None


@dataclass(eq=False)
class ActionHandle:
    """One mediated action as the HTTP resource `/v1/actions/{action_id}` sees it."""

    action_id: str
    session_id: str
    owner: str
    tool: str
    operation: str | None
    arguments: dict[str, Any]
    depends_on: tuple[str, ...]
    created_at: str
    cond: threading.Condition = field(default_factory=threading.Condition)
    #: mediating -> allowed -> (closing) -> finished
    phase: str = "mediating"
    parameters: dict[str, Any] | None = None
    #: the credential the client runs the tool with (AARM R9), while `allowed`
    credential: Credential | None = None
    outcome_deadline: str | None = None
    outcome: Outcome | None = None
    result: str | None = None
    final: dict[str, Any] | None = None
    receipt_id: str | None = None
    error: str | None = None
    finished_at: float | None = None
    #: cached lookups (the PDP decision from the log, the approval/deferral item ids)
    decision: dict[str, Any] | None = None
    approval_id: str | None = None
    deferral_id: str | None = None


class ActionRunner:
    """Starts, tracks and completes actions mediated on behalf of HTTP clients."""

    def __init__(self, guard: Guard, *, outcome_timeout: float = 300.0, max_in_flight: int = 1000) -> None:
        self._guard = guard
        self._timeout = float(outcome_timeout)
        self._max = max_in_flight
        self._handles: dict[str, ActionHandle] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, session: Session, tok: ApiToken, tool: str, arguments: dict[str, Any],
              operation: str | None, depends_on: tuple[str, ...] = ()) -> ActionHandle:
        """Begin mediating one action in a worker thread.

        Raises:
            ApiError: 429 too many actions in flight; 503 the server is stopping.
        """
        with self._lock:
            if self._stopping:
                raise ApiError(503, "stopping", "the server is stopping")
            self._prune()
            if sum(1 for h in self._handles.values() if h.phase != "finished") >= self._max:
                raise ApiError(429, "too_many_actions", f"{self._max} actions are in flight; retry later")
            h = ActionHandle(new_action_id(), session.session_id, tok.name, tool, operation, arguments,
                             depends_on, format_ts(datetime.now(UTC)))
            self._handles[h.action_id] = h
            t = threading.Thread(target=self._run, args=(session, h), name=f"aarmor-{h.action_id}", daemon=True)
            self._threads[h.action_id] = t
        t.start()
        return h

    def _run(self, session: Session, h: ActionHandle) -> None:
        result, error, final, receipt_id = "completed", None, None, None
        try:
            session.invoke(h.tool, h.arguments, lambda params: self._execute(h, params), operation=h.operation,
                           depends_on=h.depends_on, action_id=h.action_id)
        except ActionDenied as exc:
            result, final, receipt_id = "denied", exc.decision.to_json(), exc.receipt_id
        except RemoteToolError:
            result = "completed"
        except OutcomeUnknown as exc:
            result, error = "outcome_unknown", str(exc)
        except Exception as exc:  # the store failed after execution, a closed session, ...: reported as is
            result, error = "error", f"{type(exc).__name__}: {exc}"
        if receipt_id is None:
            try:
                found = receipts_of_action(self._guard.store, h.session_id, h.action_id)
                receipt_id = found[-1].receipt_id if found else None
            except Exception:  # the store closed under us (shutdown): the id stays unknown here
                receipt_id = None
        with h.cond:
            h.phase, h.result, h.error, h.final, h.receipt_id = "finished", result, error, final, receipt_id
            h.finished_at = time.monotonic()
            h.cond.notify_all()
        with self._lock:
            self._threads.pop(h.action_id, None)

    def _execute(self, h: ActionHandle, params: dict[str, Any]) -> Any:
        """The pipeline's `execute`: hand the allowed parameters to the client and wait for its report."""
        deadline = time.monotonic() + self._timeout
        with h.cond:
            h.parameters = params
            h.credential = current()  # set by the pipeline around this call
            h.outcome_deadline = format_ts(datetime.now(UTC) + timedelta(seconds=self._timeout))
            h.phase = "allowed"
            h.cond.notify_all()
            while h.outcome is None and not self._stopping and (left := deadline - time.monotonic()) > 0:
                h.cond.wait(left)
            outcome = h.outcome
            if outcome is None:
                h.phase = "closing"  # INVARIANT: a late report can no longer change what is recorded
        if outcome is None:
            why = "the server stopped" if self._stopping else f"no outcome was reported within {self._timeout:g} s"
            raise OutcomeUnknown(f"{why}: whether the tool ran is unknown")
        if outcome.success:
            return outcome.output
        raise RemoteToolError(outcome.error or "the client reported a failure")

    def report(self, h: ActionHandle, outcome: Outcome) -> None:
        """Record the client's outcome report for an allowed action.

        Raises:
            ApiError: 409 the action is not waiting for an outcome (not allowed, already reported, expired).
        """
        with h.cond:
            if h.phase != "allowed" or h.outcome is not None:
                state = "already reported" if h.outcome is not None else (
                    "no longer waiting for an outcome" if h.phase in ("closing", "finished") else "not allowed (yet)")
                raise ApiError(409, "not_allowed", f"action `{h.action_id}` is {state}")
            h.outcome = outcome
            h.cond.notify_all()

    def wait_finished(self, h: ActionHandle, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with h.cond:
            while h.phase != "finished" and (left := deadline - time.monotonic()) > 0:
                h.cond.wait(left)

    def get(self, action_id: str, tok: ApiToken) -> ActionHandle:
        """The action `action_id` if `tok` may see it.

        Raises:
            ApiError: 404 unknown (or forgotten) action, 403 another principal's action.
        """
        h = self._handles.get(action_id)
        if h is None:
            raise ApiError(404, "not_found", f"no action `{action_id}` in this server (finished actions are "
                           "kept an hour; their receipts stay in the store)")
        if tok.role != "admin" and tok.name != h.owner:
            raise ApiError(403, "not_owner", f"action `{action_id}` belongs to another principal")
        return h

    def shutdown(self, join: float = 2.0) -> None:
        """Release every action waiting for an outcome (recorded as unknown) and wait briefly for receipts."""
        with self._lock:
            self._stopping = True
            handles = list(self._handles.values())
        released = []
        for h in handles:
            with h.cond:
                if h.phase in ("allowed", "closing"):
                    released.append(h.action_id)
                h.cond.notify_all()
        # wait for the receipts of the actions released here; those still waiting for an approval or a
        # deferral end when the guard closes (as DENY)
        deadline = time.monotonic() + join
        for aid in released:
            t = self._threads.get(aid)
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))

    def _prune(self) -> None:
        now = time.monotonic()
        for aid, h in list(self._handles.items()):
            if h.finished_at is not None and now - h.finished_at > KEEP_FINISHED:
                del self._handles[aid]

    # --- the resource view ---------------------------------------------------------------------------
    def view(self, h: ActionHandle) -> dict[str, Any]:
        """The JSON state of an action (reads the store and the desks: call off the event loop)."""
        with h.cond:
            phase, result = h.phase, h.result
        out: dict[str, Any] = {"action_id": h.action_id, "session_id": h.session_id, "tool": h.tool,
                               "operation": h.operation, "created_at": h.created_at}
        if h.decision is None:
            h.decision = self._requested_decision(h)
        out["decision"] = h.final if h.final is not None else h.decision
        if phase == "finished":
            out["status"] = result
            out["receipt_id"] = h.receipt_id
            if h.outcome is not None:
                out["outcome"] = {"success": h.outcome.success, "error": h.outcome.error}
            if h.error is not None:
                out["error"] = h.error
        elif phase in ("allowed", "closing"):
            out["status"] = "allowed"
            out["parameters"] = h.parameters
            out["modified"] = h.parameters != h.arguments
            out["outcome_deadline"] = h.outcome_deadline
            out["outcome_reported"] = h.outcome is not None
            if h.credential is not None and h.outcome is None:
                secret = "token" if h.credential.kind == "access_token" else "dsn"
                out["credential"] = {**h.credential.describe(), secret: getattr(h.credential, secret)}
        else:
            out.update(self._waiting(h))
        if phase == "finished" and h.parameters is not None:
            out["parameters"] = h.parameters
            out["modified"] = h.parameters != h.arguments
        for key in ("approval_id", "deferral_id"):
            if getattr(h, key) is not None:
                out[key] = getattr(h, key)
        return out

    def _waiting(self, h: ActionHandle) -> dict[str, Any]:
        """`pending_approval`, `deferred` or (briefly, before the decision is known) `evaluating`."""
        g = self._guard
        if h.approval_id is None or h.deferral_id is None:
            if h.approval_id is None:
                h.approval_id = _item_for(approvals(g).list(status=None, session_id=h.session_id), h.action_id)
            if h.deferral_id is None:
                h.deferral_id = _item_for(deferrals(g).list(status=None, session_id=h.session_id), h.action_id)
        if h.approval_id is not None:
            item = approvals(g).get(h.approval_id)
            if item.get("status") == "pending":
                return {"status": "pending_approval", "deadline": item.get("deadline"),
                        "approvers": item.get("approvers", []), "source": item.get("source")}
        if h.deferral_id is not None:
            item = deferrals(g).get(h.deferral_id)
            if item.get("status") == "pending":
                return {"status": "deferred", "deadline": item.get("deadline"),
                        "context_needed": item.get("context_needed", [])}
        return {"status": "evaluating"}

    def _requested_decision(self, h: ActionHandle) -> dict[str, Any] | None:
        """The PDP's decision as the session's log recorded it before the action could run or wait."""
        try:
            for rec in self._guard.store.read_log(h.session_id):
                if rec.kind == "action_requested" and rec.body.get("action", {}).get("action_id") == h.action_id:
                    decision = rec.body.get("decision")
                    return decision if isinstance(decision, dict) else None
        except Exception:  # a store that is down or closed: the decision is just not shown yet
            return None
        return None


def _item_for(items: list[dict[str, Any]], action_id: str) -> str | None:
    """The newest approval or deferral item of `action_id` (a DEFER escalated to STEP_UP has both)."""
    found = [i for i in items if i.get("action_id") == action_id]
    return str(found[-1]["id"]) if found else None
