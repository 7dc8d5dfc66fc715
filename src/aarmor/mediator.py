"""The one mediation pipeline (DESIGN.md section 1). Every door hands its call to `Mediator`.

    door -> Action -> identity check -> context snapshot -> PDP.evaluate -> log "requested" (durable)
         -> enforce: ALLOW | MODIFY -> execute | STEP_UP -> approvals | DEFER -> deferrals | DENY
         -> log "outcome" + signed receipt (one durable commit)

Rules this module enforces:
- AARM R1 fail closed: any exception on the way to a decision (normalisation, identity, context, PDP,
  the "requested" write, approvals, deferrals, signing) means the action does not run; a DENY receipt
  records the error class whenever the store can still take it. There is no switch that changes this.
- The "requested" entry commits before execution; the outcome entry and the receipt commit together after.
- STEP_UP and DEFER never execute before resolution; a timeout is DENY, never allow (AARM R4).
- A caller that gives up while its call waits (an async cancellation) gets a recorded DENY; a commit
  already under way for it finishes first (async callers commit in a worker thread, off the event loop).
- `unattended` (nobody will approve or resolve): a STEP_UP or DEFER ends at once, not executed, and the
  `ActionDenied` keeps its STEP_UP or DEFER decision.
- `redact_output` in a decision's modifications is applied to the output the caller receives (and to
  a `ToolFailed` output); an output that cannot be inspected is withheld (`OutputWithheld`), not handed over.
- A call whose door names no operation gets the one configured for its tool (`tools: {name: {operation}}`).
- A DEFER ends only by a PDP re-evaluation of the original action (original identity) with the new
  context: ALLOW, MODIFY, DENY, or STEP_UP sent to the approvers as an escalated DEFER (AARM 2.6).
- A call whose dependency (`depends_on`, result handle) is still open is deferred too, one whose
  dependency did not run is denied, and deferral chains deeper than `max_cascade` are denied.
- The identity captured at submission is re-verified before a waited-for action runs (AARM 2.5).
- AARM R9: a tool configured under `credentials.tools` gets a credential minted just before it runs (after
  any wait and the identity re-check), scoped to the operation and bound to the arguments that run; it
  reaches the tool through `aarmor.credentials.current_credential()`, is released right after the tool
  returns or fails, and is described (never its secret) in the receipt's `execution.credential`. A
  credential that cannot be issued means the tool does not run: a DENY recorded with the error.
- Several processes may serve one session (a shared PostgreSQL or SQLite store): a commit the store refuses
  because another process moved the session's chain is retried on the caught-up head under the store's lock
  on the session (`_commit`; entries alone re-base in `Transaction.commit`), never forked, never dropped.
- The sync and async paths share every phase; only waiting and calling the tool differ.
- An observed action (`observe`, AARM 4.3 OTel ingestion) is decided by the same phases but nothing is
  enforced: its entries and receipt are marked observed and say what the policy would have decided.
The mediator never parses YAML, never speaks a protocol, and never decides: the PDP does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aarmor.approvals import ApprovalRequest, ApprovalResult, ApprovalService
from aarmor.canonical import TAG_APPROVAL_BINDING, digest, format_ts
from aarmor.context.output_redaction import redact_output
from aarmor.context.risk import session_risk
from aarmor.credentials.model import Credential, binding
from aarmor.deferrals import DeferralRequest, DeferralResolution
from aarmor.deferrals.service import DeferralDesk
from aarmor.errors import (
    ActionDenied,
    ChainError,
    InputError,
    OutcomeUnknown,
    OutputWithheld,
    ProcessEnded,
    StoreError,
    ToolFailed,
)
from aarmor.identity import IdentityVerifier
from aarmor.intent import AlignmentScorer
from aarmor.metatools import Unwrapped, rewrap, unwrap
from aarmor.model import Action, ContextSnapshot, Decision, DecisionResult, FrozenMap, Identity, thaw
from aarmor.normalize import normalize_action, normalize_name
from aarmor.observed import ALERT_RESULTS, OBSERVED, OBSERVED_ALERT, Observation, ObservedRecord, ObservedToolError
from aarmor.policy import apply_modifications, evaluate
from aarmor.receipts import ReceiptSigner, build_receipt, parameters_digest, redact_parameters
from aarmor.store import GENESIS, LogRecord, PendingRecord, Store

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.credentials.broker import CredentialBroker

__all__ = ["HANDLE_PREFIX", "PROCESS_ENDED", "Mediator", "SessionState"]

#: an argument string holding `aarmor:result:<action_id>` makes the call depend on that action (AARM R4)
HANDLE_PREFIX = "aarmor:result:"
_HANDLE = re.compile(re.escape(HANDLE_PREFIX) + r"([A-Za-z0-9_.\-]{1,80})")
#: finished actions a session remembers for `depends_on` (older ones are forgotten: depending on them is DENY)
_MAX_FLIGHTS = 10_000
#: seconds between re-evaluations of a deferred action when nothing it depends on has changed
_REEVALUATE_EVERY = 5.0
_ACTION_ID = re.compile(r"[A-Za-z0-9_.\-]{1,80}")
#: the outcome crash recovery records for an action whose process ended before its outcome was written
PROCESS_ENDED = "unknown: process ended"

log = logging.getLogger("aarmor.mediator")

D = DecisionResult
#: marks "deliver the output as the tool returned it"
_RAW: Any = object()
_T = TypeVar("_T")


@dataclass(eq=False)
class Flight:
    """An action of this session as dependents see it: finished yet, executed, how deep it was deferred."""

    depth: int = 0
    done: bool = False
    executed: bool = False


@dataclass(eq=False)
class SessionState:
    """What the pipeline keeps per session: its context log, bound identity and receipt chain head."""

    session_id: str
    identity: Identity
    ctx: Any  # aarmor.context.SessionContext
    receipt_seq: int = -1
    receipt_head: str = GENESIS
    closed: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: actions begun in this session by this process, for `depends_on` and result handles
    flights: dict[str, Flight] = field(default_factory=dict)


@dataclass(eq=False)
class _Call:
    """One call moving through the phases. `final` is the decision enforced (DENY after a timeout)."""

    st: SessionState
    action: Action
    decision: Decision
    final: Decision
    now: datetime
    params_view: dict[str, Any]
    params_digest: str
    run_params: FrozenMap | None = None
    snapshot: ContextSnapshot | None = None
    depends_on: tuple[str, ...] = ()
    #: the meta-tool wrapper(s) this call came in (the tool runs with `rewrap`ped arguments)
    meta: Unwrapped | None = None
    approval_source: str = "step_up"
    log_seq: int | None = None
    context_hash: str | None = None
    #: the "requested" entry is durably in the log (else `_finish` stages it with the outcome)
    requested_logged: bool = False
    error: BaseException | None = None
    flag: str | None = None
    approval: dict[str, Any] | None = None
    deferral: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    output: Any = None
    tool_error: BaseException | None = None
    #: the not-executed call ends with its own decision (an unattended STEP_UP or DEFER), not a DENY
    kept: bool = False
    #: what the caller receives when it differs from `output` (after `redact_output`)
    delivered: Any = _RAW
    #: the just-in-time credential the tool runs with (AARM R9), until released
    credential: Credential | None = None
    #: crash recovery ends this call: whose it was and who recovered it (`enforcement.recovered`)
    recovered: dict[str, Any] | None = None
    #: an observed action (`Mediator.observe`): what was reported, nothing enforced (`enforcement.mode`)
    observed: Observation | None = None


class Mediator:
    """The pipeline. Built once by `Guard`; stateless between calls except through `SessionState`."""

    def __init__(self, *, policy: Callable[[], Any], store: Store, signer: ReceiptSigner,
                 verifier: IdentityVerifier, scorer: AlignmentScorer, approvals: ApprovalService,
                 deferrals: DeferralDesk, config: Any, clock: Callable[[], datetime],
                 credentials: CredentialBroker | None = None) -> None:
        self._policy = policy
        self._store = store
        self._signer = signer
        self._verifier = verifier
        self._scorer = scorer
        self._approvals = approvals
        self._deferrals = deferrals
        self._cfg = config
        self._clock = clock
        #: the `CredentialBroker` (AARM R9), or None when no tool is configured for credentials
        self._credentials = credentials if credentials is not None and credentials.enabled else None
        #: async calls in flight in this process (a plain counter: a race only picks thread vs inline)
        self._async_calls = 0
        #: executed actions whose outcome commit failed (disk full, store down): (call, receipt kind, stage),
        #: written by `flush_unrecorded` as soon as the store takes writes again
        self._unrecorded: list[tuple[_Call, str, Callable[[Any], None]]] = []
        self._unrecorded_lock = threading.Lock()

    # --- public entry points ------------------------------------------------------------------
    def evaluate(self, st: SessionState, tool: str, arguments: Any, operation: str | None) -> Decision:
        """Dry run: the decision this call would get now. Executes and records nothing; never raises."""
        now = self._clock()
        try:
            action = self._normalize(st, tool, arguments, operation, now)
            return self._decide(st, action, now)[0]
        except Exception as exc:  # AARM R1: fail closed, even in a dry run
            return self._error_decision(exc)

    def invoke(self, st: SessionState, tool: str, arguments: Any, execute: Callable[[dict[str, Any]], Any],
               operation: str | None, *, depends_on: Sequence[str] = (), action_id: str | None = None) -> Any:
        call = self._begin(st, tool, arguments, operation, depends_on=depends_on, action_id=action_id)
        if call.final.result in (D.STEP_UP, D.DEFER) and not self._unattended(call):
            self._wait(call)
        if call.run_params is not None and self._credentials is not None:
            self._issue_credential(call)
        if call.run_params is not None:
            self._mark_started(call)
            try:
                with binding(call.credential):
                    call.output = execute(self._tool_args(call))
            except BaseException as exc:  # the tool's own failure: recorded, then re-raised
                call.tool_error = exc
            self._mark_completed(call)
        return self._end(call)

    async def ainvoke(self, st: SessionState, tool: str, arguments: Any,
                      execute: Callable[[dict[str, Any]], Any | Awaitable[Any]], operation: str | None, *,
                      depends_on: Sequence[str] = (), action_id: str | None = None) -> Any:
        self._async_calls += 1
        try:
            call = await self._durably(
                self._begin, st, tool, arguments, operation, depends_on=depends_on, action_id=action_id,
                on_cancel=lambda c: self._abandon(c, "cancelled by the caller before the decision was enforced"))
            if call.final.result in (D.STEP_UP, D.DEFER) and not self._unattended(call):
                try:
                    await self._wait_async(call)
                except asyncio.CancelledError:  # the caller gave up while it waited: a DENY, recorded
                    await asyncio.shield(asyncio.to_thread(self._abandon, call,
                                                           "cancelled by the caller while waiting"))
                    raise
            if call.run_params is not None and self._credentials is not None:
                await self._durably(self._issue_credential, call, on_cancel=self._abandon_credential)
            if call.run_params is not None:
                self._mark_started(call)
                try:
                    with binding(call.credential):  # an awaited tool runs in this task: it sees the credential
                        result = execute(self._tool_args(call))
                        call.output = await result if inspect.isawaitable(result) else result
                except BaseException as exc:
                    call.tool_error = exc
                self._mark_completed(call)
            return await self._durably(self._end, call)
        finally:
            self._async_calls -= 1

    async def _durably(self, phase: Callable[..., _T], *args: Any,
                       on_cancel: Callable[[_T], None] | None = None, **kwargs: Any) -> _T:
        """Run a phase that commits (`_begin`, `_finish`) for an async caller.

        With other async calls in flight, in a worker thread: one caller's fsync must not stall every other
        session on the event loop, and `_settled` makes sure a caller cancelled meanwhile still gets its
        call recorded to the end. Alone, inline: there is nobody to stall, and a thread hop would only add
        latency (about 0.1 ms each way here, more on a loaded machine).
        """
        if self._async_calls <= 1:
            return phase(*args, **kwargs)
        return await _settled(asyncio.to_thread(phase, *args, **kwargs), on_cancel=on_cancel)

    def _abandon(self, call: _Call, why: str) -> None:
        """Record the DENY of a call whose caller went away before it could run (never raises)."""
        self._fail(call, RuntimeError(why))
        with contextlib.suppress(Exception):
            self._finish(call)

    def _abandon_credential(self, call: _Call) -> None:
        """The caller went away while its credential was issued: take it back, record the DENY."""
        self._release_credential(call)
        self._abandon(call, "cancelled by the caller before the tool ran")

    def _unattended(self, call: _Call) -> bool:
        """With nobody to approve or resolve (`unattended`), a STEP_UP or DEFER ends now, not executed."""
        if not self._cfg.unattended:
            return False
        call.run_params = None
        call.kept = True
        call.final = dataclasses.replace(
            call.final, reason=f"unattended: {call.final.result.value} not waited for; {call.final.reason}")
        return True

    # --- observed actions (AARM 4.3 OTel ingestion: after the fact, nothing enforced) -------------
    def observe(self, st: SessionState, tool: str, arguments: Any, operation: str | None,
                observation: Observation, *, action_id: str | None = None) -> ObservedRecord:
        """Record an action a telemetry stream reported: judged by the policy, nothing enforced.

        The phases of a mediated call up to the decision (normalisation and meta-tool resolution, identity,
        context snapshot, PDP), then one commit of the `action_requested` and `action_outcome` entries (the
        outcome as reported) and a signed receipt, all marked observed (docs/ingest-otlp.md). Nothing waits,
        nothing runs, no approval or deferral is opened: the action already happened, or did not, without
        aarmor. A call that cannot be normalised is recorded with the fail-closed DENY aarmor would have made.

        Raises:
            InputError: `action_id` is malformed or was already used in this session (nothing recorded).
            RuntimeError: the session is closed.
            StoreError, ChainError: the record could not be written (nothing was).
        """
        now = self._clock()
        if action_id is not None and (not isinstance(action_id, str) or not _ACTION_ID.fullmatch(action_id)):
            raise InputError(f"action_id `{action_id!r}` must be 1-80 characters of letters, digits, `_.-`")
        if action_id is not None and action_id in st.flights:
            raise InputError(f"action_id `{action_id}` was already used in session `{st.session_id}`")
        try:
            action = self._normalize(st, tool, arguments, operation, now, action_id)
        except RuntimeError:
            raise  # caller misuse (closed session): not an action at all
        except Exception as exc:
            action = _placeholder_action(st, tool, operation, now)
            if action_id is not None:
                action = dataclasses.replace(action, action_id=action_id)
            call = self._denied_call(st, action, now, exc)
        else:
            if observation.started_at is not None:  # when it happened, as reported (not when aarmor heard)
                action = dataclasses.replace(action, timestamp=observation.started_at)
            try:
                decision, action, flag, snapshot = self._decide_with(st, action, now)
                call = _Call(st, action, decision, decision, now, redact_parameters(action.parameters,
                                                                                    self._cfg.redaction),
                             action.parameters_digest or parameters_digest(action.parameters), flag=flag,
                             snapshot=snapshot)
            except Exception as exc:  # the decision aarmor would have made: fail closed
                call = self._denied_call(st, action, now, exc)
        call.observed = observation
        alert = call.decision.result in ALERT_RESULTS
        alerts = (*_alerts(call), OBSERVED_ALERT) if alert else _alerts(call)
        executed = observation.executed
        if executed:
            call.execution = {"started_at": format_ts(observation.started_at) if observation.started_at else None,
                              "completed_at": format_ts(observation.completed_at) if observation.completed_at
                              else None, "success": observation.success, "output_hash": None,
                              "error": observation.error, "reported": True}
        call.approval = dict(observation.approval) if observation.approval is not None else None
        error: BaseException | None = ObservedToolError(observation.error) if executed and observation.error \
            else call.error

        def stage(tx: Any) -> None:
            req = tx.requested(call.action, call.decision, parameters_view=call.params_view, alerts=alerts,
                               parameters_digest=call.params_digest, now=call.now, observed=True)
            call.log_seq, call.context_hash = req.seq, req.entry_hash
            out = tx.observed_outcome(call.action, executed=executed, success=observation.success,
                                      output=observation.output, error=error, now=self._clock())
            if call.execution is not None:  # the digest of the reported output, as the log holds it
                call.execution["output_hash"] = out.body.get("output_digest")

        receipt_id = self._commit(call, kind="decision", stage=stage)
        # known to this session only once recorded, so a retry after a failed commit may use the same id
        st.flights[call.action.action_id] = Flight()
        self._landed(call, executed=observation.executed is True)
        d = call.decision
        return ObservedRecord(receipt_id, call.action.action_id, call.action.tool, call.action.raw_tool, d.result,
                              d.reason, alert)

    # --- phase 1: normalise, verify, snapshot, decide, record "requested" ----------------------
    def _normalize(self, st: SessionState, tool: str, arguments: Any, operation: str | None,
                   now: datetime, action_id: str | None = None) -> Action:
        if st.closed:
            raise RuntimeError(f"session `{st.session_id}` already closed")
        if action_id is not None and (not isinstance(action_id, str) or not _ACTION_ID.fullmatch(action_id)):
            raise InputError(f"action_id `{action_id!r}` must be 1-80 characters of letters, digits, `_.-`")
        if action_id is not None and action_id in st.flights:
            raise InputError(f"action_id `{action_id}` was already used in session `{st.session_id}`")
        if operation is None and self._cfg.tools and isinstance(tool, str):
            declared = self._cfg.tools.get(normalize_name(tool))  # `tools: {name: {operation: ...}}`
            operation = declared.operation if declared is not None else None
        # AARM 2.1/4.3: a meta-tool (`execute_tool {tool: shell}`) is judged as the tool it runs; the
        # wrapper's name stays on the action as `raw_tool` (see aarmor.metatools)
        meta = unwrap(tool, arguments, self._cfg.meta_tools)
        if meta is not None:
            action = normalize_action(meta.tool, meta.arguments, operation=None, identity=st.identity,
                                      session_id=st.session_id, now=now, action_id=action_id,
                                      limits=self._cfg.limits)
            return dataclasses.replace(action, raw_tool=tool)
        return normalize_action(tool, arguments, operation=operation, identity=st.identity,
                                session_id=st.session_id, now=now, action_id=action_id, limits=self._cfg.limits)

    def _tool_args(self, call: _Call) -> dict[str, Any]:
        """The arguments the tool runs with: the allowed ones, put back into a meta-tool's wrapper."""
        assert call.run_params is not None
        args: dict[str, Any] = thaw(call.run_params)
        return rewrap(call.meta, args) if call.meta is not None else args

    def _decide(self, st: SessionState, action: Action, now: datetime) -> tuple[Decision, Action, str | None]:
        decision, action, flag, _ = self._decide_with(st, action, now)
        return decision, action, flag

    def _decide_with(self, st: SessionState, action: Action,
                     now: datetime) -> tuple[Decision, Action, str | None, ContextSnapshot]:
        identity, flag = self._verifier.verify(action.identity, now=now)
        if identity is not action.identity:
            action = dataclasses.replace(action, identity=identity)
        snapshot = st.ctx.snapshot(now, action=action)
        signal = self._scorer.score(action, snapshot)
        if signal is not None:
            # which scorer produced the alignment: thresholds are calibrated per scorer (docs/intent.md)
            signals = {**snapshot.risk_signals, "intent_scorer": self._scorer.name}
            if signal.risk_signals:  # the scorer's drift signals, then the session risk that counts them
                signals.update(signal.risk_signals)
                signals["session_risk"], signals["session_risk_factors"] = session_risk(signals)
            snapshot = dataclasses.replace(snapshot, alignment=signal.alignment,
                                           semantic_distance=signal.semantic_distance,
                                           confidence=signal.confidence, risk_signals=FrozenMap(signals))
        decision = evaluate(action, snapshot, self._policy(), now=now,
                            confidence_threshold=self._cfg.confidence_threshold)
        return decision, action, flag, snapshot

    def _begin(self, st: SessionState, tool: str, arguments: Any, operation: str | None, *,
               depends_on: Sequence[str] = (), action_id: str | None = None) -> _Call:
        now = self._clock()
        try:
            action = self._normalize(st, tool, arguments, operation, now, action_id)
        except RuntimeError:
            raise  # caller misuse (closed session): not an action at all
        except Exception as exc:
            action = _placeholder_action(st, tool, operation, now)
            return self._denied_call(st, action, now, exc)
        flight = st.flights[action.action_id] = Flight()
        try:
            # an action that ran and is not yet recorded comes first: nothing new runs until the store
            # has taken its record (and once it has, service resumes by itself)
            if self._unrecorded and (left := self.flush_unrecorded()):
                raise StoreError(f"the outcome of {left} executed action(s) could not be recorded yet (the store "
                                 "refuses writes); no new action runs until it is")
            decision, action, flag, snapshot = self._decide_with(st, action, now)
            deps = self._dependencies(st, action, depends_on)
            decision = self._apply_dependencies(st, decision, deps, flight)
            params_view = redact_parameters(action.parameters, self._cfg.redaction)
            call = _Call(st, action, decision, decision, now, params_view,
                         action.parameters_digest or parameters_digest(action.parameters), flag=flag,
                         snapshot=snapshot, depends_on=deps)
            if action.raw_tool is not None:
                call.meta = unwrap(tool, arguments, self._cfg.meta_tools)
            if decision.result in (D.ALLOW, D.MODIFY):
                call.run_params = self._run_params(action, decision)
            if decision.result is not D.DENY:
                # AARM R1: a signer that cannot sign must stop the action before it runs, not after
                self._signer.check()
        except Exception as exc:  # AARM R1: no fail-open path
            return self._denied_call(st, action, now, exc)
        # A DENY is recorded in one commit with its outcome and receipt (`_finish`); anything that may
        # run or wait commits its "requested" entry first.
        return call if decision.result is D.DENY else self._record_requested(call)

    def _dependencies(self, st: SessionState, action: Action, depends_on: Sequence[str]) -> tuple[str, ...]:
        """Explicit `depends_on` ids plus result handles found in the arguments (AARM R4 DEFER obligations).

        Raises:
            InputError: `depends_on` is not a list of ids, names this action, or an action this session
                has not seen (a dependency that cannot be checked is not assumed satisfied).
        """
        if isinstance(depends_on, str) or not isinstance(depends_on, Sequence):
            raise InputError("depends_on must be a list of action ids")
        found = [*depends_on, *_handles(action.parameters)]
        deps = tuple(dict.fromkeys(found))
        for dep in deps:
            if not isinstance(dep, str) or dep == action.action_id:
                raise InputError(f"action `{action.action_id}` cannot depend on `{dep!r}`")
            if dep not in st.flights:
                raise InputError(f"action depends on `{dep}`, which this session has not seen")
        return deps

    def _apply_dependencies(self, st: SessionState, decision: Decision, deps: tuple[str, ...],
                            flight: Flight) -> Decision:
        """A dependency that did not run makes this a DENY; one still open makes this a DEFER (cascade-bounded)."""
        if decision.result is D.DEFER:
            flight.depth = 1
        if not deps or decision.result is D.DENY:
            return decision
        states = {d: (st.flights[d].done, st.flights[d].executed) for d in deps}  # one reading (see below)
        failed = [d for d, (done, ran) in states.items() if done and not ran]
        if failed:
            return _denied(decision, f"depends on {', '.join(failed)}, which did not execute")
        open_ = [d for d, (done, _) in states.items() if not done]
        if not open_:
            return decision
        depth = 1 + max(st.flights[d].depth for d in open_)
        limit = self._cfg.deferrals.max_cascade
        if depth > limit:
            return _denied(decision, f"deferral cascade of depth {depth} exceeds the limit of {limit} "
                                     f"(waits for {', '.join(open_)})")
        flight.depth = depth
        return dataclasses.replace(
            decision, result=D.DEFER, defer_trigger="dependency",
            reason=f"waits for {', '.join(open_)} to finish" + (
                f"; policy: {decision.reason}" if decision.result is not D.ALLOW else ""),
            context_needed=decision.context_needed if decision.result is D.DEFER else (),
            timeout=decision.timeout if decision.result is D.DEFER else None)

    def _run_params(self, action: Action, decision: Decision) -> FrozenMap:
        if decision.result is D.MODIFY or (decision.modifications and decision.result is D.STEP_UP):
            if not decision.modifications:
                raise InputError(f"rule `{decision.rule_id}` decided MODIFY without modifications")
            if set(decision.modifications) == {"redact_output"}:
                return action.parameters  # only the output changes (`_redact_output`)
            return apply_modifications(action.parameters, decision.modifications)
        return action.parameters

    def _denied_call(self, st: SessionState, action: Action, now: datetime, exc: BaseException) -> _Call:
        decision = self._error_decision(exc)
        try:
            view, dig = redact_parameters(action.parameters, self._cfg.redaction), parameters_digest(
                action.parameters)
        except Exception:
            view, dig = {}, parameters_digest({})
        return _Call(st, action, decision, decision, now, view, dig, error=exc)

    def _error_decision(self, exc: BaseException) -> Decision:
        policy = _safe(self._policy)
        return Decision(
            result=D.DENY,
            reason=f"fail closed: {type(exc).__name__}: {exc}",
            policy_id=getattr(policy, "policy_id", None),
            policy_version=getattr(policy, "version", None),
            policy_hash=getattr(policy, "hash", None),
            errors=(f"{type(exc).__name__}: {exc}",),
        )

    def _record_requested(self, call: _Call) -> _Call:
        """Commit the "requested" entry before anything can run (AARM 2.2 `append_action`)."""
        try:
            rec = call.st.ctx.record_requested(call.action, call.decision, parameters_view=call.params_view,
                                               parameters_digest=call.params_digest, now=call.now,
                                               alerts=_alerts(call))
            call.log_seq, call.context_hash = rec.seq, rec.entry_hash
            call.requested_logged = True
        except Exception as exc:  # context store unavailable: AARM 4.2 fail closed
            call.error = call.error or exc
            call.final = self._error_decision(exc)
            call.run_params = None
        return call

    # --- phase 2: STEP_UP and DEFER wait ---------------------------------------------------------
    # A DEFER runs first (suspend, gather context, re-evaluate); its re-evaluation may end in STEP_UP,
    # which then waits for a human like any STEP_UP (labelled an escalated DEFER). The deferral loop is a
    # generator that yields whenever it must wait, so the sync and async paths share every step.
    def _wait(self, call: _Call) -> None:
        try:
            if call.final.result is D.DEFER:
                for rec in self._deferral_flow(call):
                    self._deferrals.wait(rec)
            if call.final.result is D.STEP_UP:
                req = self._approval_request(call)
                self._after_approval(call, req, self._approvals.wait(req))
        except Exception as exc:  # AARM R1: an error while waiting is a DENY
            self._fail(call, exc)

    async def _wait_async(self, call: _Call) -> None:
        try:
            if call.final.result is D.DEFER:
                for rec in self._deferral_flow(call):
                    await self._deferrals.wait_async(rec)
            if call.final.result is D.STEP_UP:
                req = self._approval_request(call)
                self._after_approval(call, req, await self._approvals.wait_async(req))
        except Exception as exc:
            self._fail(call, exc)

    def _view(self, call: _Call) -> dict[str, Any]:
        """What an approver or resolver sees (AARM 2.5 "approver must see")."""
        d, snap, ident = call.final, call.snapshot, call.action.identity
        return {
            "original_request": snap.original_request if snap else None,
            "tool": call.action.tool, "operation": call.action.operation, "parameters": call.params_view,
            "parameters_digest": call.params_digest, "identity": ident.to_json(),
            "prior_actions": [{"action_id": p.action_id, "tool": p.tool, "operation": p.operation,
                               "decision": p.decision.value, "executed": p.executed,
                               "at": format_ts(p.timestamp)} for p in (snap.prior_actions if snap else ())],
            "classifications": sorted(snap.classifications) if snap else [],
            "max_sensitivity": snap.max_sensitivity if snap else None,
            "risk_level": d.risk_level.value, "rule_id": d.rule_id,
            "policy": {"policy_id": d.policy_id, "version": d.policy_version, "hash": d.policy_hash},
            "reason": d.reason, "confidence": d.confidence if d.confidence is not None else (
                snap.confidence if snap else None),
            "semantic_distance": snap.semantic_distance if snap else None,
            "alignment": d.alignment if d.alignment is not None else (snap.alignment if snap else None),
            "decision": d.result.value,
        }

    def _approval_request(self, call: _Call) -> ApprovalRequest:
        d = call.final
        timeout = min(d.timeout if d.timeout is not None else self._cfg.approvals.default_timeout,
                      self._cfg.approvals.max_timeout)
        run_params = self._run_params(call.action, d)
        ident = call.action.identity
        req = ApprovalRequest(
            "apr_" + uuid.uuid4().hex, call.action, d, d.approvers, float(timeout), self._clock(),
            source=call.approval_source, action_digest=_binding(call.action, run_params), view=self._view(call),
            requesters=tuple(p for p in (ident.human, ident.service, ident.agent) if p),
            escalation=thaw(d.escalation) if d.escalation is not None else None,
            extra={"log_seq": call.log_seq, "context_hash": call.context_hash,
                   "parameters_view": call.params_view, "parameters_digest": call.params_digest})
        call.st.ctx.record_event("approval_requested", {**_jsonable(req.to_json()), **_about(call)},
                                 now=req.requested_at)
        return req

    def _after_approval(self, call: _Call, req: ApprovalRequest, res: ApprovalResult) -> None:
        step = call.final
        call.approval = {
            "request_id": req.request_id, "requested_at": format_ts(req.requested_at),
            "approvers": list(req.approvers), "approver": res.approver, "granted": res.granted,
            "reason": res.reason, "decided_at": format_ts(res.decided_at), "timeout": req.timeout,
            "source": req.source, "identity_verified": res.identity_verified, "channel": res.channel,
        }
        call.st.ctx.record_event("approval_decided", {**call.approval, **_about(call)}, now=self._clock())
        if not res.granted:
            call.final = _denied(step, f"STEP_UP not granted: {res.reason}")
            return
        self._reverify(call)
        call.approval["identity_verified"] = True
        call.run_params = self._run_params(call.action, step)
        call.final = dataclasses.replace(
            step, result=D.MODIFY if call.run_params is not call.action.parameters else D.ALLOW,
            reason=f"STEP_UP granted by `{res.approver}`: {res.reason}")

    def _deferral_request(self, call: _Call) -> DeferralRequest:
        d = call.final
        timeout = min(d.timeout if d.timeout is not None else self._cfg.deferrals.default_timeout,
                      self._cfg.deferrals.max_timeout)
        return DeferralRequest("dfr_" + uuid.uuid4().hex, call.action, d, d.reason, d.defer_trigger,
                               d.context_needed, float(timeout), call.now, view=self._view(call),
                               depends_on=call.depends_on,
                               cascade=max(1, call.st.flights[call.action.action_id].depth))

    def _deferral_flow(self, call: _Call) -> Generator[PendingRecord, None, None]:
        """Suspend, gather context, re-evaluate with the PDP until it decides or the deadline passes."""
        st = call.st
        req = self._deferral_request(call)
        self._write_deferral_receipt(call, req)
        rec = self._deferrals.open(req, extra={
            "log_seq": call.log_seq, "context_hash": call.context_hash, "parameters_view": call.params_view,
            "parameters_digest": call.params_digest})
        applied: dict[str, Any] = {}
        last_key: Any = None
        last_at = 0.0
        resolver: str | None = None
        res: DeferralResolution | None = None
        decision: Decision | None = None
        try:
            while True:
                rec = self._deferrals.refresh(rec)
                for name, entry in rec.body.get("supplied", {}).items():
                    if applied.get(name) != entry:  # each supplied value enters the log once, with provenance
                        st.ctx.set_value(name, entry["value"], source=f"{entry['channel']}:{entry['by']}",
                                         now=self._clock())
                        applied[name], resolver = entry, entry["by"]
                now = self._clock()
                if rec.status != "pending":
                    res = DeferralResolution("TIMEOUT", f"deferral ended as {rec.status}", rec.status, now)
                    break
                # INVARIANT: one reading of the dependencies decides (here and in `_apply_dependencies`).
                # Read twice, a dependency
                # that failed in between looked open to the first check and finished to the second, and
                # the action ran after a dependency that did not (found by a flaky conformance test).
                states = [(st.flights[d].done, st.flights[d].executed) for d in call.depends_on]
                failed = [d for d, (done, ran) in zip(call.depends_on, states, strict=True) if done and not ran]
                if failed:
                    res = DeferralResolution("DENY", f"dependency {', '.join(failed)} did not execute",
                                             "dependency_failed", now)
                    break
                # re-evaluate when something it could depend on changed (the session's context, the
                # policy, a dependency), and at least every few seconds for time-dependent rules
                key = (st.ctx.head, _safe(lambda: self._policy().hash), tuple(done for done, _ in states))
                due = key != last_key or time.monotonic() - last_at >= _REEVALUATE_EVERY
                if due and all(done for done, _ in states):
                    last_key, last_at = key, time.monotonic()
                    decision, action, _flag, snapshot = self._decide_with(st, call.action, now)
                    if decision.result is not D.DEFER:  # never re-defer: the loop waits for more instead
                        call.action, call.snapshot = action, snapshot
                        method = "context_supplied" if applied else (
                            "dependency_resolved" if call.depends_on else "re-evaluation")
                        res = DeferralResolution(decision.result.value, decision.reason, method, now, resolver)
                        break
                if self._deferrals.expired(rec):
                    closed = self._deferrals.closing
                    needed = ", ".join(req.context_needed) or (
                        "completion of " + ", ".join(call.depends_on) if call.depends_on else "context")
                    res = DeferralResolution(
                        "TIMEOUT", "guard closed while deferred" if closed else
                        f"timeout: {needed} not available within {req.timeout:g} s", "shutdown" if closed
                        else "timeout", now)
                    break
                yield rec
        except BaseException as exc:
            res = DeferralResolution("DENY", f"error while deferred: {type(exc).__name__}: {exc}", "error",
                                     self._clock())
            # the resolution receipt says how the deferral ended (e.g. the identity was revoked meanwhile)
            assert call.deferral is not None
            call.deferral.update(resolution_method=res.method, resolved_at=format_ts(res.resolved_at),
                                 result=res.result, resolution_reason=res.reason)
            raise
        finally:
            if res is not None:
                self._deferrals.finish(rec, res)
        self._after_deferral(call, req, res, decision)

    def _after_deferral(self, call: _Call, req: DeferralRequest, res: DeferralResolution,
                        decision: Decision | None) -> None:
        assert call.deferral is not None
        call.deferral.update(resolution_method=res.method, resolved_at=format_ts(res.resolved_at),
                             result=res.result, resolution_reason=res.reason, resolver=res.resolver)
        call.st.ctx.record_event("deferral_resolved", {**call.deferral, **_about(call)}, now=self._clock())
        if decision is None or res.result not in ("ALLOW", "MODIFY", "STEP_UP"):
            call.final = _denied(call.decision, f"DEFER not resolved: {res.reason}")
            return
        if decision.result is D.STEP_UP:  # AARM 2.5: an escalated DEFER goes to a human, labelled so
            call.final, call.approval_source = decision, "defer_escalation"
            return
        call.run_params = self._run_params(call.action, decision)
        call.final = dataclasses.replace(decision, reason=f"DEFER resolved ({res.method}): {decision.reason}")

    def verify_identity(self, identity: Identity) -> Identity:
        """The identity as the configured verifier vouches for it now (tokens, delegation chain, revocation).

        Raises:
            IdentityError: it does not verify.
        """
        return self._verifier.verify(identity, now=self._clock())[0]

    def _reverify(self, call: _Call) -> None:
        # AARM 2.5: never execute on stale identity; the verifier raises if it no longer holds.
        self._verifier.verify(call.action.identity, now=self._clock())

    def _write_deferral_receipt(self, call: _Call, req: DeferralRequest) -> None:
        """AARM R4/R5: a receipt at DEFER time (this one), a second at resolution or timeout."""
        call.deferral = {
            "deferral_id": req.deferral_id, "reason": req.reason, "trigger": req.trigger,
            "context_needed": list(req.context_needed), "depends_on": list(req.depends_on),
            "cascade": req.cascade, "deferred_at": format_ts(req.deferred_at),
            "timeout_at": format_ts(req.timeout_at), "resolution_method": None, "resolved_at": None,
            "result": None,
        }
        event = {**call.deferral, **_about(call)}
        self._commit(call, kind="deferral",
                     stage=lambda tx: tx.event("deferral_created", event, now=call.now))

    def _fail(self, call: _Call, exc: BaseException) -> None:
        call.error = exc
        call.run_params = None
        call.final = dataclasses.replace(self._error_decision(exc), rule_id=call.decision.rule_id)

    # --- phase 3: credential, execute, release -------------------------------------------------
    def _issue_credential(self, call: _Call) -> _Call:
        """AARM R9: mint the tool's credential for the arguments that will run; failing that, DENY."""
        assert self._credentials is not None and call.run_params is not None
        try:
            call.credential = self._credentials.issue(call.action, thaw(call.run_params))
        except Exception as exc:  # AARM R1: no credential, no execution
            self._fail(call, exc)
        return call

    def _release_credential(self, call: _Call) -> None:
        """Take the credential back once the tool's run ended (never raises); the receipt says how it went."""
        cred, call.credential = call.credential, None
        if cred is None or self._credentials is None:
            return
        outcome = ("not executed" if call.execution is None else "tool succeeded" if call.tool_error is None
                   else f"tool failed: {type(call.tool_error).__name__}")
        released = self._credentials.release(cred, outcome=outcome)
        if call.execution is not None:
            call.execution["credential"] = {**cred.describe(), **released}

    def _mark_started(self, call: _Call) -> None:
        call.execution = {"started_at": format_ts(self._clock()), "completed_at": None, "success": None,
                          "output_hash": None, "error": None}

    def _mark_completed(self, call: _Call) -> None:
        assert call.execution is not None
        call.execution["completed_at"] = format_ts(self._clock())
        call.execution["success"] = call.tool_error is None
        if call.tool_error is not None:
            call.execution["error"] = f"{type(call.tool_error).__name__}: {call.tool_error}"
        if isinstance(call.tool_error, OutcomeUnknown):  # the executor never said: not a failure, not a success
            call.execution.update(success=None, executed="unknown")

    # --- phase 4: outcome + receipt, one commit -------------------------------------------------
    def _end(self, call: _Call) -> Any:
        """Release the call's credential (if any), then record the outcome and the receipt."""
        if call.credential is not None:
            self._release_credential(call)
        return self._finish(call)

    def _finish(self, call: _Call) -> Any:
        executed = call.execution is not None
        receipt_id: str | None = None
        withheld = self._redact_output(call) if executed else None

        def stage(tx: Any) -> None:
            if not call.requested_logged:  # a DENY: requested, outcome and receipt in one commit
                req = tx.requested(call.action, call.decision, parameters_view=call.params_view, alerts=_alerts(call),
                                   parameters_digest=call.params_digest, now=call.now)
                call.log_seq, call.context_hash = req.seq, req.entry_hash
            unknown = isinstance(call.tool_error, OutcomeUnknown)
            log, _labels = tx.outcome(
                call.action, executed=executed,
                success=None if not executed or unknown else call.tool_error is None,
                output=call.output if executed and call.tool_error is None else None,
                error=call.tool_error or call.error, now=self._clock(), effects=call.decision.effects)
            if call.execution is not None:
                # the same digest the context log holds: receipt and log agree on what came back
                call.execution["output_hash"] = log.body.get("output_digest")

        try:
            receipt_id = self._commit(call, kind="resolution" if call.deferral else "decision", stage=stage)
        except Exception as exc:
            if executed:
                # the action ran; its audit record failed: the caller must know (StoreError), and the
                # record is written as soon as the store takes writes again (`flush_unrecorded`)
                with self._unrecorded_lock:
                    self._unrecorded.append((call, "resolution" if call.deferral else "decision", stage))
                raise
            call.error = call.error or exc
            self._log_without_receipt(call, stage)
        finally:
            self._landed(call, executed=executed and call.tool_error is None)
        if not executed:
            final = call.final if call.final.result is D.DENY or call.kept else _denied(call.final, call.final.reason)
            raise ActionDenied(final, receipt_id)
        if withheld is not None:
            raise OutputWithheld(withheld, receipt_id)
        if call.tool_error is not None:
            raise call.tool_error
        return call.output if call.delivered is _RAW else call.delivered

    def _redact_output(self, call: _Call) -> str | None:
        """Apply the decision's `redact_output` to what the caller will receive (AARM 4.2 MODIFY).

        The log keeps classifying the output as the tool returned it (what the session has been exposed
        to, the safer reading); the receipt records what was redacted. Returns why the output must be
        withheld, when it cannot be redacted.
        """
        mods = call.final.modifications
        labels = mods.get("redact_output") if mods is not None else None
        failed = call.tool_error
        if not labels or (failed is not None and not isinstance(failed, ToolFailed)):
            return None
        assert call.execution is not None
        try:
            redacted, report = redact_output(failed.output if isinstance(failed, ToolFailed) else call.output,
                                             labels)
        except Exception as exc:  # fail closed: an output that cannot be inspected is not handed over
            call.execution["output_redaction"] = {"withheld": True, "reason": f"{type(exc).__name__}: {exc}"}
            return f"{type(exc).__name__}: {exc}"
        call.execution["output_redaction"] = report.to_json()
        if isinstance(failed, ToolFailed):
            failed.output = redacted
        else:
            call.delivered = redacted
        return None

    def _landed(self, call: _Call, *, executed: bool) -> None:
        """Tell dependents this action is finished (and whether it ran), then let them look."""
        flights = call.st.flights
        flight = flights.get(call.action.action_id)
        if flight is not None:
            flight.executed = executed  # before `done`: whoever sees it done must see whether it ran
            flight.done = True
            self._deferrals.wake_session(call.st.session_id)
        if len(flights) > _MAX_FLIGHTS:  # bounded memory: forget the oldest finished actions
            for old in [k for k, f in list(flights.items()) if f.done][: len(flights) - _MAX_FLIGHTS // 2]:
                flights.pop(old, None)

    def flush_unrecorded(self) -> int:
        """Write the outcome and receipt of every executed action whose record failed before; returns how
        many are still unrecorded (0: all written). Called before each new call and by the owner lease's
        timer (`aarmor.recovery.OwnerLease`), so the records land without a restart once the fault clears.

        An action that crash recovery took over meanwhile (this process was taken for dead) already has its
        one receipt ("unknown: process ended"): it is dropped from the backlog, logged.
        """
        with self._unrecorded_lock:  # one flush at a time: an item must never be committed twice
            while self._unrecorded:
                call, kind, stage = self._unrecorded[0]
                sid, aid = call.st.session_id, call.action.action_id
                try:
                    held = self._store.inflight_owner(sid, aid)
                    if held is not None and held != self._store.owner:
                        log.error("the outcome of action %s of session %s is lost: its record was closed by "
                                  "crash recovery (%s) while the store refused writes", aid, sid, held)
                    else:
                        # a session ended meanwhile (by another process) takes no more entries: the receipt
                        # alone says how the action went
                        self._commit(call, kind=kind, stage=_unless_ended(call.st, stage))
                        log.warning("recorded the outcome of action %s of session %s late (the store refused "
                                    "it when the tool returned)", aid, sid)
                except (StoreError, ChainError) as exc:  # the store still refuses: keep it, try again later
                    log.warning("the outcome of action %s of session %s is still not recorded: %s", aid, sid, exc)
                    break
                except Exception:  # it can never be written (e.g. no key to sign with): do not block every call
                    log.exception("the outcome of action %s of session %s cannot be recorded; it stays in flight "
                                  "and ends as \"unknown: process ended\" after this process", aid, sid)
                self._unrecorded.pop(0)
            return len(self._unrecorded)

    # --- recovery: items whose waiting caller died --------------------------------------------------
    def close_abandoned(self, st: SessionState, rec: PendingRecord) -> str | None:
        """Record the DENY of an approval or deferral whose caller ended before it was resolved.

        The item must already be marked `abandoned` (by compare-and-set, so only one process does this).
        Returns the receipt id.
        """
        body = rec.body
        action = Action.from_json(body["action"], parameters_digest=str(body.get("parameters_digest", "")))
        decision = Decision.from_json(body["decision"])
        now = self._clock()
        why = f"waiting caller ended before the {rec.kind} was resolved (owner {rec.owner})"
        view = body.get("parameters_view") or body.get("request", {}).get("parameters") or {}
        call = _Call(st, action, decision, _denied(decision, why), now, dict(view),
                     str(body.get("parameters_digest") or body.get("request", {}).get("parameters_digest") or
                         parameters_digest(action.parameters)),
                     log_seq=body.get("log_seq"), context_hash=body.get("context_hash"), requested_logged=True)
        if rec.kind == "deferral":
            call.deferral = {"deferral_id": rec.item_id, "reason": body.get("reason"),
                             "trigger": body.get("trigger"), "context_needed": body.get("context_needed", []),
                             "deferred_at": rec.created_at, "timeout_at": rec.deadline,
                             "resolution_method": "abandoned", "resolved_at": format_ts(now), "result": "DENY"}
        else:
            call.approval = {"request_id": rec.item_id, "requested_at": rec.created_at,
                             "approvers": body.get("approvers", []), "approver": None, "granted": False,
                             "reason": why, "decided_at": format_ts(now), "timeout": None,
                             "source": body.get("source", "step_up"), "identity_verified": False}
        try:
            self._finish(call)
        except ActionDenied as denied:
            return denied.receipt_id
        return None  # pragma: no cover (a call without execution always ends in ActionDenied)

    def close_interrupted(self, st: SessionState, requested: LogRecord, *, owner: str, recovered_by: str) -> str:
        """Record the end of an action whose process ended after its `action_requested` entry committed and
        before its outcome did: the tool may or may not have run, so the outcome entry and the receipt say
        "unknown: process ended" (executed unknown, success null), never "not executed".

        The in-flight row must already be claimed by this process (`Store.inflight_claim`, compare-and-set,
        so only one process does this). Returns the receipt id.

        Raises:
            ChainError: another writer moved the session's chains meanwhile (resume the session, retry).
            StoreError: the store could not write.
        """
        body = requested.body
        act = body["action"]
        action = Action.from_json(act, parameters_digest=str(act.get("parameters_digest") or ""))
        decision = Decision.from_json(body["decision"])
        now = self._clock()
        recovered = {"owner": owner, "recovered_by": recovered_by, "recovered_at": format_ts(now)}
        final = dataclasses.replace(decision, reason=f"{PROCESS_ENDED} (owner {owner}) after the decision: "
                                                     f"{decision.reason}")
        call = _Call(st, action, decision, final, now, dict(act.get("parameters") or {}),
                     action.parameters_digest or parameters_digest(action.parameters), log_seq=requested.seq,
                     context_hash=requested.entry_hash, requested_logged=True, error=ProcessEnded(PROCESS_ENDED),
                     recovered=recovered)
        call.execution = {"started_at": None, "completed_at": None, "success": None, "output_hash": None,
                          "error": f"ProcessEnded: {PROCESS_ENDED}", "executed": "unknown"}

        def stage(tx: Any) -> None:
            if not st.ctx.ended:  # a session ended meanwhile by another process: the receipt alone says it
                tx.recovered_outcome(action, error=call.error, recovered=recovered, now=now)

        return self._commit(call, kind="decision", stage=stage)

    def _log_without_receipt(self, call: _Call, stage: Callable[[Any], None]) -> None:
        """No receipt could be written (signer or store down): keep the attempt in the chained log."""
        try:
            with call.st.ctx.atomic() as tx:
                stage(tx)
                tx.commit()
        except Exception:
            log.exception("could not record denied action %s in session %s", call.action.action_id,
                          call.st.session_id)

    def _receipt_body(self, call: _Call, *, kind: str) -> dict[str, Any]:
        st = call.st
        modified = None
        if call.run_params is not None and call.run_params is not call.action.parameters:
            modified = call.run_params
        body: dict[str, Any] = build_receipt(
            kind=kind, action=call.action, decision=call.decision, session_seq=st.receipt_seq + 1,
            prev_receipt_hash=st.receipt_head, context_hash=call.context_hash or GENESIS,
            log_seq=call.log_seq if call.log_seq is not None else -1, now=self._clock(),
            redaction=self._cfg.redaction, modified_parameters=modified, approval=call.approval,
            deferral=dict(call.deferral) if call.deferral else None, execution=call.execution,
            error=None if call.error is None else {"class": type(call.error).__name__,
                                                  "message": str(call.error)},
            parameters_view=call.params_view,
        )
        ran = False if call.execution is None else call.execution.get("executed", True)
        body["enforcement"] = {"result": call.final.result.value, "executed": ran,
                               "reason": call.final.reason, "identity_flag": call.flag}
        if call.recovered is not None:  # crash recovery: the tool may have run, nobody knows its outcome
            body["enforcement"].update(executed="unknown", recovered=call.recovered)
        if call.observed is not None:  # AARM 4.3: seen after the fact; aarmor enforced nothing
            ob = call.observed
            body["enforcement"] = {
                "mode": OBSERVED, "result": "OBSERVED",
                "executed": "unknown" if ob.executed is None else ob.executed,
                "reason": f"observed, not mediated: aarmor did not stand between the agent and this tool; "
                          f"the policy would have decided {call.decision.result.value}",
                "identity_flag": call.flag, "alert": OBSERVED_ALERT if call.decision.result in ALERT_RESULTS
                else None}
            body["observation"] = dict(ob.source)
        signals = call.snapshot.risk_signals if call.snapshot is not None else FrozenMap()
        findings = signals.get("provenance_findings")
        if findings:  # which argument came from which earlier output (argument paths, never values)
            body["context"]["provenance"] = thaw(findings)
        if signals.get("intent_scorer"):  # what produced the alignment and drift in `decision`
            body["context"]["intent"] = {"scorer": signals["intent_scorer"],
                                         "profile": signals.get("intent_profile")}
        return body

    def _commit(self, call: _Call, *, kind: str, stage: Callable[[Any], None]) -> str:
        """Stage log entries, sign the receipt and write both in one durable commit.

        INVARIANT: the session's log head and receipt head move only after the store write returned.
        """
        st = call.st
        try:
            return self._commit_once(call, kind, stage)
        except ChainError:
            # Another process appended to this session (several processes serving it). Retry holding the
            # store's lock on the session, so no one else appends while we catch up on its log and receipt
            # heads, stage and sign again on top of them, and commit.
            for attempt in range(_CHAIN_RETRIES):
                with self._store.session_lock(st.session_id), st.lock:
                    st.ctx.catch_up()
                    head = self._store.receipt_head(st.session_id)
                    if head is not None:
                        st.receipt_seq, st.receipt_head = head
                    try:
                        return self._commit_once(call, kind, stage)
                    except ChainError:
                        if attempt + 1 == _CHAIN_RETRIES:
                            raise
                time.sleep(random.uniform(0, 0.001 * (attempt + 1)))
            raise

    def _commit_once(self, call: _Call, kind: str, stage: Callable[[Any], None]) -> str:
        st = call.st
        with st.ctx.atomic() as tx, st.lock:
            stage(tx)
            record = self._signer.sign(self._receipt_body(call, kind=kind))
            tx.commit(receipts=(record,))
            st.receipt_seq, st.receipt_head = record.seq, record.receipt_hash
            return record.receipt_id


async def _settled(work: Awaitable[_T], *, on_cancel: Callable[[_T], None] | None = None) -> _T:
    """Await `work` (a thread's result) to its end even if the awaiting task is cancelled meanwhile.

    A cancellation is re-raised only after the work finished, so a commit is never left half-known; with
    `on_cancel`, the finished work's result is handed to it (in a thread) before the cancellation propagates.
    """
    fut = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            result = await fut
            if on_cancel is not None:
                await asyncio.to_thread(on_cancel, result)
        raise


def _unless_ended(st: SessionState, stage: Callable[[Any], None]) -> Callable[[Any], None]:
    def staged(tx: Any) -> None:
        if not st.ctx.ended:
            stage(tx)
    return staged


def _denied(decision: Decision, reason: str) -> Decision:
    return dataclasses.replace(decision, result=D.DENY, reason=reason)


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _handles(value: Any) -> list[str]:
    """Action ids named by result handles (`aarmor:result:<id>`) anywhere in the arguments."""
    if isinstance(value, str):
        return _HANDLE.findall(value) if HANDLE_PREFIX in value else []
    if isinstance(value, Mapping):
        return [h for v in value.values() for h in _handles(v)]
    if isinstance(value, list | tuple):
        return [h for v in value for h in _handles(v)]
    return []


def _binding(action: Action, run_params: Mapping[str, Any]) -> str:
    """What an approval is bound to: the exact action that may run (AARM 2.5, single use)."""
    return digest(TAG_APPROVAL_BINDING, {
        "tool": action.tool, "operation": action.operation, "parameters": thaw(run_params),
        "identity": action.identity.to_json(), "session_id": action.session_id})


#: attempts at a commit that other processes' appends to the same session keep refusing (random pauses between)
_CHAIN_RETRIES = 20
#: risk signals worth an alert when they hold at a decision (recorded on its `action_requested` entry)
_ALERT_SIGNALS = ("drift_detected", "injection_suspected")


def _alerts(call: _Call) -> tuple[str, ...]:
    signals = call.snapshot.risk_signals if call.snapshot is not None else None
    return tuple(s for s in _ALERT_SIGNALS if signals is not None and signals.get(s) is True)


def _about(call: _Call) -> dict[str, Any]:
    """Which action a lifecycle event (approval, deferral) is about, for the log and telemetry."""
    return {"action_id": call.action.action_id, "tool": call.action.tool, "operation": call.action.operation}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: format_ts(v) if isinstance(v, datetime) else v for k, v in d.items()}


def _placeholder_action(st: SessionState, tool: Any, operation: Any, now: datetime) -> Action:
    """The action as far as it could be read, for the denial receipt of unnormalisable input."""
    try:
        name = normalize_name(tool)
    except Exception:
        name = "invalid"
    raw = tool if isinstance(tool, str) else repr(tool)
    return Action(action_id="act_" + uuid.uuid4().hex, timestamp=now, tool=name,
                  operation=operation if isinstance(operation, str) and operation.isascii() else "",
                  parameters=FrozenMap(), identity=st.identity, session_id=st.session_id,
                  raw_tool=raw[:256])
