"""The durable approval service (AARM 2.5): STEP_UP requests in the store, decided by humans.

`ApprovalDesk` is both sides of an approval:
- the waiting side (`wait` / `wait_async`, called by the mediator): store the request, notify, wait for a
  decision, the timeout (DENY) or escalation; consume a granted approval exactly once;
- the approver side (`list` / `get` / `decide`, used by the CLI, the HTTP API and the page).

Rules this module enforces:
- Only a principal the rule routes to may decide (groups are resolved to people from config at submission;
  escalation adds its `to` names when it fires); nobody decides on an action they requested (the action's
  human, service or agent principal). Refusals are recorded on the item.
- Every status change is a compare-and-set on the stored item, so two approvers, or an approver and the
  timeout, cannot both win; the loser gets `Refused("not_pending")`.
- A granted approval is bound to a digest of the exact action (tool, operation, final parameters, identity,
  session) and is consumed once (`consume`): another action's digest, or a second use, is refused and recorded.
- A timeout, a closed guard or any error ends as "not granted"; nothing here grants without a human.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from aarmor.approvals import ApprovalRequest, ApprovalResult
from aarmor.canonical import format_ts
from aarmor.config import ApprovalsConfig
from aarmor.errors import InputError, NotFound, Refused
from aarmor.store import PendingRecord, Store
from aarmor.waiting import OWNER, ClockFn, Overdue, Wakeups, parse_ts, renew_lease, sleep_for

__all__ = ["ANYONE", "ApprovalDesk", "approval_view"]

log = logging.getLogger("aarmor.approvals")

#: the eligible-approver entry meaning "any holder of an approver credential" (a rule that names nobody)
ANYONE = "*"
_MAX_REFUSALS = 100
#: terminal and intermediate statuses of an approval item
PENDING, APPROVED, DENIED, EXPIRED, CONSUMED, ABANDONED = (
    "pending", "approved", "denied", "expired", "consumed", "abandoned")


def _fold(name: str) -> str:
    return name.strip().casefold()


def approval_view(rec: PendingRecord) -> dict[str, Any]:
    """What approvers see (and notifications carry): the full context, the routing, the decision."""
    body = rec.body
    out = rec.outcome or {}
    decision = None
    if "approver" in out:
        decision = {k: out.get(k) for k in ("approver", "granted", "reason", "decided_at", "channel")}
    return {
        "id": rec.item_id, "kind": "approval", "status": rec.status, "source": body.get("source", "step_up"),
        "session_id": rec.session_id, "action_id": rec.action_id, "created_at": rec.created_at,
        "deadline": rec.deadline, "escalated": bool(body.get("escalated")),
        "approvers": list(body.get("approvers", [])), "request": body.get("request", {}), "decision": decision,
        "used": out.get("used"), "refusals": list(body.get("refusals", [])),
    }


class ApprovalDesk:
    """STEP_UP approvals kept in the store. Built by `Guard`; reached as `guard.approvals`."""

    def __init__(self, store: Store, config: ApprovalsConfig, *, clock: ClockFn, notifications: Any = None) -> None:
        self._store = store
        self._cfg = config
        self._clock = clock
        self.notifications = notifications
        self._wake = Wakeups()
        self._overdue = Overdue()
        self._closing = threading.Event()

    # --- the waiting side (ApprovalService) --------------------------------------------------------
    def submit(self, req: ApprovalRequest) -> PendingRecord:
        """Store the request (routed to people) and notify the channels."""
        now = self._clock()
        names = list(req.approvers)
        rec = PendingRecord(
            item_id=req.request_id, kind="approval", session_id=req.action.session_id,
            action_id=req.action.action_id, status=PENDING, created_at=format_ts(req.requested_at),
            deadline=format_ts(req.requested_at + timedelta(seconds=req.timeout)), owner=OWNER,
            lease_until=format_ts(now + timedelta(seconds=self._cfg.lease_seconds)),
            body={
                "source": req.source, "approvers": names, "eligible": self._eligible(names),
                "requesters": [p for p in req.requesters if p], "action_digest": req.action_digest,
                "request": dict(req.view), "escalation": dict(req.escalation) if req.escalation else None,
                "escalated": False, "refusals": [],
                "action": req.action.to_json(), "decision": req.decision.to_json(), **req.extra,
            },
        )
        self._store.pending_put(rec)
        self._send("approval_requested", rec)
        return rec

    def wait(self, req: ApprovalRequest) -> ApprovalResult:
        ev = self._wake.register(req.request_id)
        self._overdue.start(req.request_id, req.timeout)
        try:
            rec = self.submit(req)
            while True:
                rec, result = self._step(rec, req)
                if result is not None:
                    return result
                now = self._clock()
                self._wake.wait(ev, sleep_for(self._next_wake(rec), now, self._cfg.poll_interval))
        finally:
            self._wake.unregister(req.request_id)
            self._overdue.drop(req.request_id)

    async def wait_async(self, req: ApprovalRequest) -> ApprovalResult:
        ev = self._wake.register(req.request_id)
        self._overdue.start(req.request_id, req.timeout)
        rec: PendingRecord | None = None
        try:
            rec = self.submit(req)
            while True:
                rec, result = self._step(rec, req)
                if result is not None:
                    return result
                now = self._clock()
                await self._wake.wait_async(ev, sleep_for(self._next_wake(rec), now, self._cfg.poll_interval))
        except asyncio.CancelledError:
            # the caller gave up (an MCP client cancelled the call): nobody waits, so nobody may approve
            if rec is not None:
                self._store.pending_update(rec.item_id, rec.version, status=EXPIRED, outcome={
                    "reason": "cancelled by the caller while waiting", "ended_at": format_ts(self._clock())})
            raise
        finally:
            self._wake.unregister(req.request_id)
            self._overdue.drop(req.request_id)

    def close(self) -> None:
        """Release every waiter as not granted (their items end as expired)."""
        self._closing.set()
        self._wake.wake_all()

    def _next_wake(self, rec: PendingRecord) -> datetime:
        deadline = parse_ts(rec.deadline)
        esc = rec.body.get("escalation")
        if esc and not rec.body.get("escalated"):
            deadline = min(deadline, parse_ts(rec.created_at) + timedelta(seconds=float(esc["after"])))
        return deadline

    def _step(self, rec: PendingRecord, req: ApprovalRequest) -> tuple[PendingRecord, ApprovalResult | None]:
        """One look at the item: take a decision, expire it, escalate it, or renew our lease."""
        fresh = self._store.pending_get(rec.item_id)
        if fresh is None:
            raise NotFound(f"approval `{rec.item_id}` vanished from the store")
        rec = fresh
        now = self._clock()
        if rec.status in (APPROVED, DENIED):
            return rec, self._take(rec, req, now)
        if rec.status != PENDING:  # expired or abandoned by someone else (recovery): not granted
            return rec, self._not_granted(rec, f"approval ended as {rec.status}", now)
        if self._closing.is_set() or now >= parse_ts(rec.deadline) or self._overdue.due(rec.item_id):
            why = "guard closed while waiting" if self._closing.is_set() else (
                f"timeout: no approver decided within {req.timeout:g} s")
            done = self._store.pending_update(rec.item_id, rec.version, status=EXPIRED,
                                              outcome={"reason": why, "ended_at": format_ts(now)})
            if done is None:  # a decision landed at the same moment: look again
                return rec, None
            return done, self._not_granted(done, why, now)
        esc = rec.body.get("escalation")
        if esc and not rec.body.get("escalated") and now >= parse_ts(rec.created_at) + timedelta(
                seconds=float(esc["after"])):
            return self._escalate(rec, esc), None
        return renew_lease(self._store, rec, now=now, lease=self._cfg.lease_seconds), None

    def _escalate(self, rec: PendingRecord, esc: dict[str, Any]) -> PendingRecord:
        to = [str(x) for x in esc.get("to", [])]
        body = dict(rec.body)
        body["escalated"] = True
        body["approvers"] = list(dict.fromkeys([*body.get("approvers", []), *to]))
        body["eligible"] = list(dict.fromkeys([*body.get("eligible", []), *self._eligible(to)]))
        new = self._store.pending_update(rec.item_id, rec.version, body=body)
        if new is None:
            return rec
        self._send("approval_escalated", new)
        return new

    def _take(self, rec: PendingRecord, req: ApprovalRequest, now: datetime) -> ApprovalResult | None:
        out = rec.outcome or {}
        decided_at = parse_ts(out["decided_at"]) if out.get("decided_at") else now
        if rec.status == DENIED:
            return ApprovalResult(False, out.get("approver"), str(out.get("reason") or "denied"), decided_at,
                                  channel=out.get("channel"))
        self.consume(rec.item_id, req.action_digest, action_id=req.action.action_id)
        return ApprovalResult(True, out.get("approver"), str(out.get("reason") or ""), decided_at,
                              channel=out.get("channel"))

    def _not_granted(self, rec: PendingRecord, why: str, now: datetime) -> ApprovalResult:
        return ApprovalResult(False, None, why, now)

    # --- single use -----------------------------------------------------------------------------------
    def consume(self, request_id: str, action_digest: str, *, action_id: str) -> dict[str, Any]:
        """Use a granted approval for the action with `action_digest`, once.

        Raises:
            NotFound: no such approval.
            Refused: `not_approved` (pending, denied, expired), `already_used`, `wrong_action`; each is
                recorded on the item.
        """
        for _ in range(20):
            rec = self._get(request_id)
            code = None
            if rec.status == CONSUMED:
                code, msg = "already_used", f"approval `{request_id}` was already used"
            elif rec.status != APPROVED:
                code, msg = "not_approved", f"approval `{request_id}` is {rec.status}, not approved"
            elif rec.body.get("action_digest") != action_digest:
                code, msg = "wrong_action", f"approval `{request_id}` was granted for a different action"
            if code is not None:
                self._refuse(rec, code, by=action_id, channel="consume")
                raise Refused(code, msg)
            out = dict(rec.outcome or {})
            out["used"] = {"action_id": action_id, "at": format_ts(self._clock())}
            new = self._store.pending_update(request_id, rec.version, status=CONSUMED, outcome=out)
            if new is not None:
                return approval_view(new)
        raise Refused("busy", f"approval `{request_id}` kept changing; try again")

    # --- the approver side --------------------------------------------------------------------------
    def list(self, *, status: str | None = PENDING, session_id: str | None = None) -> list[dict[str, Any]]:
        return [approval_view(r) for r in self._store.pending_list(kind="approval", status=status,
                                                                     session_id=session_id)]

    def get(self, request_id: str) -> dict[str, Any]:
        return approval_view(self._get(request_id))

    def decide(self, request_id: str, *, approver: str, granted: bool, reason: str, channel: str) -> dict[str, Any]:
        """Record an approver's decision.

        Raises:
            InputError: empty approver or reason.
            NotFound: no such approval.
            Refused: `self_approval`, `not_an_approver`, `not_pending` (already decided, expired, or another
                approver won the race), `expired` (past its deadline).
        """
        if not isinstance(approver, str) or not approver.strip():
            raise InputError("approver must be a non-empty name")
        if not isinstance(reason, str) or not reason.strip():
            raise InputError("a decision needs a reason")
        if len(reason) > 2000:
            raise InputError("reason is longer than 2000 characters")
        for _ in range(20):
            rec = self._get(request_id)
            now = self._clock()
            who = _fold(approver)
            refusal = None
            if rec.status != PENDING:
                refusal = ("not_pending", f"approval `{request_id}` is already {rec.status}")
            elif now >= parse_ts(rec.deadline):
                refusal = ("expired", f"approval `{request_id}` expired at {rec.deadline}")
            elif who in {_fold(p) for p in rec.body.get("requesters", [])}:
                refusal = ("self_approval", f"`{approver}` requested this action and cannot approve it")
            elif not self._may_decide(rec, who):
                refusal = ("not_an_approver", f"`{approver}` is not among the approvers of `{request_id}` "
                           f"({', '.join(rec.body.get('approvers', [])) or 'anyone'})")
            if refusal is not None:
                self._refuse(rec, refusal[0], by=approver, channel=channel)
                raise Refused(*refusal)
            outcome = {"approver": approver.strip(), "granted": bool(granted), "reason": reason.strip(),
                       "decided_at": format_ts(now), "channel": channel}
            new = self._store.pending_update(request_id, rec.version, status=APPROVED if granted else DENIED,
                                             outcome=outcome)
            if new is not None:
                self._wake.wake(request_id)
                self._send("approval_decided", new)
                return approval_view(new)
        raise Refused("busy", f"approval `{request_id}` kept changing; try again")

    def record_delivery(self, item_id: str, event: str, channel: str, ok: bool, detail: str) -> None:
        """Keep the outcome of a notification on the item (failures are visible to approvers and audit)."""
        for _ in range(5):
            rec = self._store.pending_get(item_id)
            if rec is None:
                return
            body = dict(rec.body)
            body["notifications"] = [*body.get("notifications", [])[-(_MAX_REFUSALS - 1):], {
                "event": event, "channel": channel, "ok": ok, "detail": detail, "at": format_ts(self._clock())}]
            if self._store.pending_update(item_id, rec.version, body=body) is not None:
                return

    # --- helpers --------------------------------------------------------------------------------------
    def _get(self, request_id: str) -> PendingRecord:
        rec = self._store.pending_get(request_id) if isinstance(request_id, str) else None
        if rec is None or rec.kind != "approval":
            raise NotFound(f"no approval `{request_id}`")
        return rec

    def _eligible(self, names: Sequence[str]) -> builtins.list[str]:
        if not names:
            return [ANYONE]
        return list(dict.fromkeys(_fold(p) for n in names for p in self._cfg.members(n)))

    @staticmethod
    def _may_decide(rec: PendingRecord, who: str) -> bool:
        eligible = rec.body.get("eligible", [])
        return ANYONE in eligible or who in eligible

    def _refuse(self, rec: PendingRecord, code: str, *, by: str, channel: str) -> None:
        """Record a refused decision or use on the item. A compare-and-set lost to a concurrent change (the
        rightful caller consuming the grant at the same moment) is retried on the fresh item: a refused
        misuse must stay on the record (it was dropped once in a while before)."""
        entry = {"code": code, "by": by, "channel": channel, "at": format_ts(self._clock())}
        for _ in range(20):
            body = dict(rec.body)
            body["refusals"] = [*list(body.get("refusals", []))[-(_MAX_REFUSALS - 1):], entry]
            if self._store.pending_update(rec.item_id, rec.version, body=body) is not None:
                return
            fresh = self._store.pending_get(rec.item_id)
            if fresh is None:
                return
            rec = fresh
        log.error("approval %s: refusal %s by %s could not be recorded (the item kept changing)", rec.item_id,
                  code, by)

    def _send(self, event: str, rec: PendingRecord) -> None:
        if self.notifications is not None:
            self.notifications.send(event, approval_view(rec))


def new_request_id() -> str:
    return "apr_" + uuid.uuid4().hex


def with_timeout(req: ApprovalRequest, timeout: float) -> ApprovalRequest:
    return dataclasses.replace(req, timeout=timeout)
