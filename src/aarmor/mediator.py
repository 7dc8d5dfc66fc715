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
- The identity captured at submission is re-verified before a waited-for action runs (AARM 2.5).
- The sync and async paths share every phase; only waiting and calling the tool differ.
The mediator never parses YAML, never speaks a protocol, and never decides: the PDP does.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aarmor.approvals import ApprovalRequest, ApprovalResult, ApprovalService
from aarmor.canonical import format_ts
from aarmor.deferrals import DeferralRequest, DeferralResolution, DeferralService
from aarmor.errors import ActionDenied, InputError
from aarmor.identity import IdentityVerifier
from aarmor.intent import AlignmentScorer
from aarmor.model import Action, Decision, DecisionResult, FrozenMap, Identity, thaw
from aarmor.normalize import normalize_action, normalize_name
from aarmor.policy import apply_modifications, evaluate
from aarmor.receipts import ReceiptSigner, build_receipt, parameters_digest, redact_parameters
from aarmor.store import GENESIS, Store

__all__ = ["Mediator", "SessionState"]

log = logging.getLogger("aarmor.mediator")

D = DecisionResult


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


class Mediator:
    """The pipeline. Built once by `Guard`; stateless between calls except through `SessionState`."""

    def __init__(self, *, policy: Callable[[], Any], store: Store, signer: ReceiptSigner,
                 verifier: IdentityVerifier, scorer: AlignmentScorer, approvals: ApprovalService,
                 deferrals: DeferralService, config: Any, clock: Callable[[], datetime]) -> None:
        self._policy = policy
        self._store = store
        self._signer = signer
        self._verifier = verifier
        self._scorer = scorer
        self._approvals = approvals
        self._deferrals = deferrals
        self._cfg = config
        self._clock = clock

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
               operation: str | None) -> Any:
        call = self._begin(st, tool, arguments, operation)
        if call.final.result in (D.STEP_UP, D.DEFER):
            self._wait(call, sync=True)
        if call.run_params is not None:
            self._mark_started(call)
            try:
                call.output = execute(thaw(call.run_params))
            except BaseException as exc:  # the tool's own failure: recorded, then re-raised
                call.tool_error = exc
            self._mark_completed(call)
        return self._finish(call)

    async def ainvoke(self, st: SessionState, tool: str, arguments: Any,
                      execute: Callable[[dict[str, Any]], Any | Awaitable[Any]], operation: str | None) -> Any:
        call = self._begin(st, tool, arguments, operation)
        if call.final.result in (D.STEP_UP, D.DEFER):
            await self._wait_async(call)
        if call.run_params is not None:
            self._mark_started(call)
            try:
                result = execute(thaw(call.run_params))
                call.output = await result if inspect.isawaitable(result) else result
            except BaseException as exc:
                call.tool_error = exc
            self._mark_completed(call)
        return self._finish(call)

    # --- phase 1: normalise, verify, snapshot, decide, record "requested" ----------------------
    def _normalize(self, st: SessionState, tool: str, arguments: Any, operation: str | None,
                   now: datetime) -> Action:
        if st.closed:
            raise RuntimeError(f"session `{st.session_id}` already closed")
        return normalize_action(tool, arguments, operation=operation, identity=st.identity,
                                session_id=st.session_id, now=now, limits=self._cfg.limits)

    def _decide(self, st: SessionState, action: Action, now: datetime) -> tuple[Decision, Action, str | None]:
        identity, flag = self._verifier.verify(action.identity, now=now)
        if identity is not action.identity:
            action = dataclasses.replace(action, identity=identity)
        snapshot = st.ctx.snapshot(now, action=action)
        signal = self._scorer.score(action, snapshot)
        if signal is not None:
            snapshot = dataclasses.replace(snapshot, alignment=signal.alignment,
                                           semantic_distance=signal.semantic_distance,
                                           confidence=signal.confidence)
        decision = evaluate(action, snapshot, self._policy(), now=now,
                            confidence_threshold=self._cfg.confidence_threshold)
        return decision, action, flag

    def _begin(self, st: SessionState, tool: str, arguments: Any, operation: str | None) -> _Call:
        now = self._clock()
        try:
            action = self._normalize(st, tool, arguments, operation, now)
        except RuntimeError:
            raise  # caller misuse (closed session): not an action at all
        except Exception as exc:
            action = _placeholder_action(st, tool, operation, now)
            return self._denied_call(st, action, now, exc)
        try:
            decision, action, flag = self._decide(st, action, now)
            params_view = redact_parameters(action.parameters, self._cfg.redaction)
            call = _Call(st, action, decision, decision, now, params_view,
                         action.parameters_digest or parameters_digest(action.parameters), flag=flag)
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

    def _run_params(self, action: Action, decision: Decision) -> FrozenMap:
        if decision.result is D.MODIFY or (decision.modifications and decision.result is D.STEP_UP):
            if not decision.modifications:
                raise InputError(f"rule `{decision.rule_id}` decided MODIFY without modifications")
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
                                               parameters_digest=call.params_digest, now=call.now)
            call.log_seq, call.context_hash = rec.seq, rec.entry_hash
            call.requested_logged = True
        except Exception as exc:  # context store unavailable: AARM 4.2 fail closed
            call.error = call.error or exc
            call.final = self._error_decision(exc)
            call.run_params = None
        return call

    # --- phase 2: STEP_UP and DEFER wait ---------------------------------------------------------
    def _approval_request(self, call: _Call) -> ApprovalRequest:
        d = call.decision
        timeout = d.timeout if d.timeout is not None else self._cfg.approvals.default_timeout
        return ApprovalRequest("apr_" + uuid.uuid4().hex, call.action, d, d.approvers, float(timeout),
                               call.now)

    def _deferral_request(self, call: _Call) -> DeferralRequest:
        d = call.decision
        timeout = min(d.timeout if d.timeout is not None else self._cfg.deferrals.default_timeout,
                      self._cfg.deferrals.max_timeout)
        return DeferralRequest("dfr_" + uuid.uuid4().hex, call.action, d, d.reason, d.defer_trigger,
                               d.context_needed, float(timeout), call.now)

    def _wait(self, call: _Call, *, sync: bool) -> None:
        try:
            if call.final.result is D.STEP_UP:
                req = self._approval_request(call)
                call.st.ctx.record_event("approval_requested", _jsonable(req.to_json()), now=call.now)
                self._after_approval(call, req, self._approvals.wait(req))
            else:
                dreq = self._deferral_request(call)
                self._write_deferral_receipt(call, dreq)
                self._after_deferral(call, dreq, self._deferrals.wait(dreq))
        except Exception as exc:  # AARM R1: an error while waiting is a DENY
            self._fail(call, exc)

    async def _wait_async(self, call: _Call) -> None:
        try:
            if call.final.result is D.STEP_UP:
                req = self._approval_request(call)
                call.st.ctx.record_event("approval_requested", _jsonable(req.to_json()), now=call.now)
                self._after_approval(call, req, await self._approvals.wait_async(req))
            else:
                dreq = self._deferral_request(call)
                self._write_deferral_receipt(call, dreq)
                self._after_deferral(call, dreq, await self._deferrals.wait_async(dreq))
        except Exception as exc:
            self._fail(call, exc)

    def _after_approval(self, call: _Call, req: ApprovalRequest, res: ApprovalResult) -> None:
        call.approval = {
            "requested_at": format_ts(req.requested_at), "approvers": list(req.approvers),
            "approver": res.approver, "granted": res.granted, "reason": res.reason,
            "decided_at": format_ts(res.decided_at), "timeout": req.timeout, "source": req.source,
            "identity_verified": res.identity_verified,
        }
        call.st.ctx.record_event("approval_decided", call.approval, now=self._clock())
        if not res.granted:
            call.final = _denied(call.decision, f"STEP_UP not granted: {res.reason}")
            return
        self._reverify(call)
        call.run_params = self._run_params(call.action, call.decision)
        call.final = dataclasses.replace(
            call.decision, result=D.MODIFY if call.run_params is not call.action.parameters else D.ALLOW,
            reason=f"STEP_UP granted by `{res.approver}`: {res.reason}")

    def _after_deferral(self, call: _Call, req: DeferralRequest, res: DeferralResolution) -> None:
        assert call.deferral is not None
        call.deferral.update(resolution_method=res.method, resolved_at=format_ts(res.resolved_at),
                             result=res.result, resolution_reason=res.reason)
        call.st.ctx.record_event("deferral_resolved", call.deferral, now=self._clock())
        if res.result != "ALLOW":  # TIMEOUT, DENY, or STEP_UP (no approver channel in this issue)
            call.final = _denied(call.decision, f"DEFER not resolved: {res.reason}")
            return
        self._reverify(call)
        call.run_params = call.action.parameters
        call.final = dataclasses.replace(call.decision, result=D.ALLOW, reason=f"DEFER resolved: {res.reason}")

    def _reverify(self, call: _Call) -> None:
        # AARM 2.5: never execute on stale identity; the verifier raises if it no longer holds.
        self._verifier.verify(call.action.identity, now=self._clock())

    def _write_deferral_receipt(self, call: _Call, req: DeferralRequest) -> None:
        """AARM R4/R5: a receipt at DEFER time (this one), a second at resolution or timeout."""
        call.deferral = {
            "deferral_id": req.deferral_id, "reason": req.reason, "trigger": req.trigger,
            "context_needed": list(req.context_needed), "deferred_at": format_ts(req.deferred_at),
            "timeout_at": format_ts(req.timeout_at), "resolution_method": None, "resolved_at": None,
            "result": None,
        }
        event = dict(call.deferral)
        self._commit(call, kind="deferral",
                     stage=lambda tx: tx.event("deferral_created", event, now=call.now))

    def _fail(self, call: _Call, exc: BaseException) -> None:
        call.error = exc
        call.run_params = None
        call.final = dataclasses.replace(self._error_decision(exc), rule_id=call.decision.rule_id)

    # --- phase 3: execute ---------------------------------------------------------------------
    def _mark_started(self, call: _Call) -> None:
        call.execution = {"started_at": format_ts(self._clock()), "completed_at": None, "success": None,
                          "output_hash": None, "error": None}

    def _mark_completed(self, call: _Call) -> None:
        assert call.execution is not None
        call.execution["completed_at"] = format_ts(self._clock())
        call.execution["success"] = call.tool_error is None
        if call.tool_error is not None:
            call.execution["error"] = f"{type(call.tool_error).__name__}: {call.tool_error}"

    # --- phase 4: outcome + receipt, one commit -------------------------------------------------
    def _finish(self, call: _Call) -> Any:
        executed = call.execution is not None
        receipt_id: str | None = None

        def stage(tx: Any) -> None:
            if not call.requested_logged:  # a DENY: requested, outcome and receipt in one commit
                req = tx.requested(call.action, call.decision, parameters_view=call.params_view,
                                   parameters_digest=call.params_digest, now=call.now)
                call.log_seq, call.context_hash = req.seq, req.entry_hash
            log, _labels = tx.outcome(
                call.action, executed=executed, success=None if not executed else call.tool_error is None,
                output=call.output if executed and call.tool_error is None else None,
                error=call.tool_error or call.error, now=self._clock(), effects=call.decision.effects)
            if call.execution is not None:
                # the same digest the context log holds: receipt and log agree on what came back
                call.execution["output_hash"] = log.body.get("output_digest")

        try:
            receipt_id = self._commit(call, kind="resolution" if call.deferral else "decision", stage=stage)
        except Exception as exc:
            if executed:
                raise  # the action ran; its audit record failed: the caller must know (StoreError)
            call.error = call.error or exc
            self._log_without_receipt(call, stage)
        if not executed:
            final = call.final if call.final.result is D.DENY else _denied(call.final, call.final.reason)
            raise ActionDenied(final, receipt_id)
        if call.tool_error is not None:
            raise call.tool_error
        return call.output

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
        body["enforcement"] = {"result": call.final.result.value, "executed": call.execution is not None,
                               "reason": call.final.reason, "identity_flag": call.flag}
        return body

    def _commit(self, call: _Call, *, kind: str, stage: Callable[[Any], None]) -> str:
        """Stage log entries, sign the receipt and write both in one durable commit.

        INVARIANT: the session's log head and receipt head move only after the store write returned.
        """
        st = call.st
        with st.ctx.atomic() as tx, st.lock:
            stage(tx)
            record = self._signer.sign(self._receipt_body(call, kind=kind))
            tx.commit(receipts=(record,))
            st.receipt_seq, st.receipt_head = record.seq, record.receipt_hash
            return record.receipt_id


def _denied(decision: Decision, reason: str) -> Decision:
    return dataclasses.replace(decision, result=D.DENY, reason=reason)


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


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
