"""Forensic reconstruction of a session from its receipts (AARM 2.7 "Forensics").

Rules:
- Every receipt is verified (signature, chain, and for stored records the index columns) before it is
  shown; a row whose receipt failed carries `verified=False` and the failure reasons. Nothing is
  dropped: a tampered receipt is shown flagged, not hidden.
- Rows read the receipt defensively: a malformed receipt still yields a row (with `?` where a field
  is unreadable), so the timeline never crashes on the evidence it is meant to examine.
- The row's `result` is what was enforced (`enforcement.result` when present: a STEP_UP that was
  granted ran as ALLOW), the PDP's verdict stays in `decision`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aarmor.receipts.verify import VerificationReport, verify_receipts, verify_records
from aarmor.store.records import ReceiptRecord

__all__ = ["Timeline", "TimelineEvent", "build_timeline"]


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One row: `timestamp tool.operation -> result`, with who, why and whether it verified."""

    timestamp: str
    action: str
    kind: str
    decision: str
    result: str
    executed: bool
    success: bool | None
    rule: str | None
    reason: str
    human: str | None
    agent: str | None
    session_id: str
    seq: int | None
    receipt_id: str
    verified: bool
    failures: tuple[str, ...] = ()

    def __str__(self) -> str:
        flag = "" if self.verified else "  [FAILED VERIFICATION: " + "; ".join(self.failures) + "]"
        return f"{self.timestamp} {self.action} -> {self.result}{flag}"

    def to_json(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "action": self.action, "kind": self.kind, "decision": self.decision,
                "result": self.result, "executed": self.executed, "success": self.success, "rule": self.rule,
                "reason": self.reason, "human": self.human, "agent": self.agent, "session_id": self.session_id,
                "seq": self.seq, "receipt_id": self.receipt_id, "verified": self.verified,
                "failures": list(self.failures)}


@dataclass(frozen=True, slots=True)
class Timeline:
    events: tuple[TimelineEvent, ...]
    report: VerificationReport

    @property
    def ok(self) -> bool:
        return self.report.ok

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": [e.to_json() for e in self.events],
                "verification": self.report.to_json()}


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _s(value: Any) -> str:
    return value if isinstance(value, str) else "?"


def _event(r: Any, failures: Mapping[str | None, list[str]]) -> TimelineEvent:
    body = _d(r)
    action, decision, enforcement = _d(body.get("action")), _d(body.get("decision")), _d(body.get("enforcement"))
    requester, execution = _d(action.get("requester_context")), _d(body.get("execution"))
    tool, op = _s(action.get("tool")), action.get("operation")
    verdict = _s(decision.get("result"))
    rid = body.get("receipt_id") if isinstance(body.get("receipt_id"), str) else None
    seq = body.get("seq")
    return TimelineEvent(
        timestamp=_s(action.get("timestamp")), action=f"{tool}.{op}" if isinstance(op, str) and op else tool,
        kind=_s(body.get("kind")), decision=verdict,
        result=enforcement["result"] if isinstance(enforcement.get("result"), str) else verdict,
        executed=bool(execution), success=execution.get("success") if execution else None,
        rule=decision.get("rule_id") or decision.get("defer_trigger"), reason=_s(decision.get("reason")),
        human=requester.get("human"), agent=requester.get("agent"), session_id=_s(body.get("session_id")),
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None, receipt_id=rid or "?",
        verified=rid is not None and rid not in failures, failures=tuple(failures.get(rid, ())),
    )


def build_timeline(receipts: Iterable[dict[str, Any] | ReceiptRecord],
                   public_keys: Mapping[str, Ed25519PublicKey], *,
                   anchors: Mapping[str, tuple[int, str]] | None = None) -> Timeline:
    """Verify `receipts` (bodies, or stored records) and rebuild their timeline in the order given.

    Failures that name no receipt (an anchor mismatch) are in `timeline.report` and make it not `ok`.
    """
    items = list(receipts)
    if items and all(isinstance(i, ReceiptRecord) for i in items):
        records = [i for i in items if isinstance(i, ReceiptRecord)]
        bodies: list[Any] = [rec.body for rec in records]
        report = verify_records(records, public_keys, anchors=anchors)
    else:
        bodies = [i.body if isinstance(i, ReceiptRecord) else i for i in items]
        report = verify_receipts(bodies, public_keys, anchors=anchors)
    failures: dict[str | None, list[str]] = {}
    for f in report.failures:
        failures.setdefault(f.receipt_id, []).append(f.reason)
    return Timeline(tuple(_event(b, failures) for b in bodies), report)
