"""DEFER deferrals (AARM 2.6). This issue: the action is suspended and times out to DENY.

The durable deferral service (resolvers, re-evaluation, dependency tracking) is the next issue; it will
implement `DeferralService`. INVARIANT: a timeout never becomes an implicit allow; nothing here returns
ALLOW without a re-evaluation by the PDP.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from aarmor.model import Action, Decision

__all__ = ["DeferralRequest", "DeferralResolution", "DeferralService", "UnresolvedDeferrals"]


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

    @property
    def timeout_at(self) -> datetime:
        return self.deferred_at + timedelta(seconds=self.timeout)


@dataclass(frozen=True, slots=True)
class DeferralResolution:
    #: "ALLOW", "DENY", "STEP_UP" after re-evaluation, or "TIMEOUT"
    result: str
    reason: str
    method: str
    resolved_at: datetime


class DeferralService(Protocol):
    def wait(self, request: DeferralRequest) -> DeferralResolution: ...

    async def wait_async(self, request: DeferralRequest) -> DeferralResolution: ...

    def close(self) -> None: ...


class UnresolvedDeferrals:
    """No resolver is configured: every deferral ends in TIMEOUT (DENY) at its deadline."""

    def __init__(self) -> None:
        self._closing = threading.Event()

    def _resolution(self, request: DeferralRequest, waited: float) -> DeferralResolution:
        closed = self._closing.is_set()
        return DeferralResolution(
            "TIMEOUT",
            "guard closed while deferred" if closed else
            f"timeout: context {', '.join(request.context_needed) or 'needed'} not supplied within "
            f"{request.timeout:g} s",
            "shutdown" if closed else "timeout",
            request.deferred_at + timedelta(seconds=waited),
        )

    def wait(self, request: DeferralRequest) -> DeferralResolution:
        start = time.monotonic()
        self._closing.wait(request.timeout)
        return self._resolution(request, time.monotonic() - start)

    async def wait_async(self, request: DeferralRequest) -> DeferralResolution:
        start = time.monotonic()
        deadline = start + request.timeout
        while not self._closing.is_set() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))
        return self._resolution(request, time.monotonic() - start)

    def close(self) -> None:
        self._closing.set()
