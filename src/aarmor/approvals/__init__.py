"""STEP_UP approvals (AARM 2.5): the request and result types and the `ApprovalService` protocol.

`aarmor.approvals.service.ApprovalDesk` is the durable service (store-backed, decided by people through
the CLI, the HTTP API or the page); `UnattendedApprovals` is for runtimes with no approver at all: every
request waits for its timeout and is not granted. INVARIANT: nothing here grants without a human decision.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from aarmor.model import Action, Decision

__all__ = ["ApprovalRequest", "ApprovalResult", "ApprovalService", "UnattendedApprovals"]


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    request_id: str
    action: Action
    decision: Decision
    approvers: tuple[str, ...]
    timeout: float
    requested_at: datetime
    source: str = "step_up"
    #: `canonical.digest(TAG_APPROVAL_BINDING, ...)` of the exact action a grant may release
    action_digest: str = ""
    #: what approvers see: original request, parameters, prior actions, classifications, risk, rule...
    view: Mapping[str, Any] = field(default_factory=dict)
    #: principals who asked for the action (human, service, agent): none of them may approve it
    requesters: tuple[str, ...] = ()
    #: the rule's `escalation: {after, to}`, if any
    escalation: Mapping[str, Any] | None = None
    #: stored with the item for recovery (the "requested" log entry it belongs to)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "requested_at": self.requested_at,
            "approvers": list(self.approvers),
            "timeout": self.timeout,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    granted: bool
    approver: str | None
    reason: str
    decided_at: datetime
    identity_verified: bool = False
    #: where the decision was given (`cli`, `api`, `page`, `slack`, `langgraph`...); None: no one decided
    channel: str | None = None


class ApprovalService(Protocol):
    def wait(self, request: ApprovalRequest) -> ApprovalResult:
        """Block the calling thread until a decision or the timeout."""

    async def wait_async(self, request: ApprovalRequest) -> ApprovalResult:
        """Await a decision or the timeout without blocking the event loop."""

    def close(self) -> None:
        """Release every waiter as not granted."""


class UnattendedApprovals:
    """No approver channel is configured: every request times out as not granted (DENY)."""

    def __init__(self) -> None:
        self._closing = threading.Event()

    def _timed_out(self, request: ApprovalRequest, waited: float) -> ApprovalResult:
        why = "guard closed while waiting" if self._closing.is_set() else (
            f"timeout: no approver decided within {request.timeout:g} s")
        return ApprovalResult(False, None, why, request.requested_at + timedelta(seconds=waited))

    def wait(self, request: ApprovalRequest) -> ApprovalResult:
        start = _mono()
        self._closing.wait(request.timeout)
        return self._timed_out(request, _mono() - start)

    async def wait_async(self, request: ApprovalRequest) -> ApprovalResult:
        start = _mono()
        deadline = start + request.timeout
        while not self._closing.is_set() and (left := deadline - _mono()) > 0:
            await asyncio.sleep(min(left, 0.05))
        return self._timed_out(request, _mono() - start)

    def close(self) -> None:
        self._closing.set()


def _mono() -> float:
    import time

    return time.monotonic()
