"""Typed access to the guard's approval and deferral desks, and receipt lookups by action.

The server uses only this surface of `ApprovalDesk` / `DeferralDesk` (aarmor.approvals.service,
aarmor.deferrals.service): `list`, `get`, `decide`, `supply`. Everything else it needs about an action
(its receipts) comes from the store's read methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.guard import Guard
    from aarmor.store import ReceiptRecord, Store

__all__ = ["Approvals", "Deferrals", "approvals", "deferrals", "receipts_of_action"]


class Approvals(Protocol):
    def list(self, *, status: str | None = ..., session_id: str | None = ...) -> list[dict[str, Any]]: ...

    def get(self, request_id: str) -> dict[str, Any]: ...

    def decide(self, request_id: str, *, approver: str, granted: bool, reason: str,
               channel: str) -> dict[str, Any]: ...


class Deferrals(Protocol):
    def list(self, *, status: str | None = ..., session_id: str | None = ...) -> list[dict[str, Any]]: ...

    def get(self, deferral_id: str) -> dict[str, Any]: ...

    def supply(self, deferral_id: str, fields: Mapping[str, Any], *, by: str, channel: str) -> dict[str, Any]: ...


def approvals(guard: Guard) -> Approvals:
    return guard.approvals


def deferrals(guard: Guard) -> Deferrals:
    return guard.deferrals


def receipts_of_action(store: Store, session_id: str, action_id: str) -> list[ReceiptRecord]:
    """The receipts of one action in chain order (a deferred action has a deferral and a resolution one)."""
    return [r for r in store.read_receipts(session_id) if r.action_id == action_id]
