"""Rows the stores keep: context log entries and signed receipts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["GENESIS", "LogRecord", "ReceiptRecord"]

#: previous-hash of the first entry of every chain
GENESIS = "sha256:" + "0" * 64


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry of a session's context log. `entry_hash` chains it to `prev_hash` (see aarmor.context.chain)."""

    session_id: str
    seq: int
    kind: str
    body: dict[str, Any]
    recorded_at: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """One signed receipt with the columns it is indexed by (AARM 2.7 storage)."""

    receipt_id: str
    session_id: str
    seq: int
    action_id: str
    timestamp: str
    tool: str
    operation: str
    decision: str
    policy_id: str | None
    human: str | None
    receipt_hash: str
    body: dict[str, Any]

    @property
    def prev_receipt_hash(self) -> str:
        return str(self.body.get("prev_receipt_hash", ""))
