"""DEFER deferrals (AARM 2.6): the request and resolution types.

`aarmor.deferrals.service.DeferralDesk` is the durable service. The suspend / gather context /
re-evaluate loop itself lives in the mediator (it re-runs the PDP); the desk stores the item, collects
context from resolvers, the CLI, the HTTP API and `Session.update_context`, and wakes the waiter.
INVARIANT: a timeout never becomes an implicit allow; nothing returns ALLOW without a PDP re-evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aarmor.model import Action, Decision

__all__ = ["DeferralRequest", "DeferralResolution"]


@dataclass(frozen=True, slots=True)
class DeferralRequest:
    deferral_id: str
    action: Action
    decision: Decision
    reason: str
    trigger: str | None
    context_needed: tuple[str, ...]
    timeout: float
    deferred_at: datetime
    #: what a resolver or a human sees (same shape as an approval's `request`)
    view: Mapping[str, Any] = field(default_factory=dict)
    #: actions this one waits for (explicit `depends_on` or result handles in its arguments)
    depends_on: tuple[str, ...] = ()
    #: how many deferred actions deep this one sits (1 = deferred itself, 2 = waits for a deferred one...)
    cascade: int = 1

    @property
    def timeout_at(self) -> datetime:
        return self.deferred_at + timedelta(seconds=self.timeout)


@dataclass(frozen=True, slots=True)
class DeferralResolution:
    #: "ALLOW", "MODIFY", "DENY", "STEP_UP" after re-evaluation, or "TIMEOUT"
    result: str
    reason: str
    #: how it ended: "context_supplied", "dependency_resolved", "dependency_failed", "timeout", "shutdown"
    method: str
    resolved_at: datetime
    #: who supplied the context that resolved it (resolver name, approver, "session")
    resolver: str | None = None
