"""In-memory backend: same contract, nothing durable. For tests and dry runs only."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from aarmor.errors import StoreError
from aarmor.store.base import PENDING_FIELDS, Store
from aarmor.store.lease_clock import lease_alive, lease_text
from aarmor.store.records import (
    RECOVERED,
    ApiToken,
    CredentialEvent,
    InflightRecord,
    LogRecord,
    PendingRecord,
    ReceiptRecord,
    Revocation,
    RevocationEvent,
    TreeHead,
)
from aarmor.telemetry.events import TelemetryEvent

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    def __init__(self) -> None:
        self.url = "memory://"
        self._logs: dict[str, list[LogRecord]] = {}
        self._receipts: dict[str, list[ReceiptRecord]] = {}
        self._by_id: dict[str, ReceiptRecord] = {}
        self._lock = threading.RLock()
        self._pending: list[tuple[str, Any]] | None = None
        self._items: dict[str, PendingRecord] = {}
        self._tokens: dict[str, ApiToken] = {}
        self._revocations: dict[tuple[str, str], Revocation] = {}
        self._revocation_events: list[RevocationEvent] = []
        self._credentials: list[CredentialEvent] = []
        self._spool: list[TelemetryEvent] = []
        self._spool_ids: set[str] = set()
        self._spool_seq = 0
        self._cursors: dict[str, int] = {}
        self._leaves: list[bytes] = []
        self._leaf_index: dict[str, int] = {}
        self._tree_heads: list[TreeHead] = []
        self._inflight: dict[tuple[str, str], InflightRecord] = {}
        self._owners: dict[str, str] = {}

    @contextlib.contextmanager
    def _txn(self) -> Iterator[None]:
        with self._lock:
            self._pending = []
            inflight = dict(self._inflight)  # changed in place during the transaction: restored on failure
            try:
                yield
                for kind, rec in self._pending:
                    if kind == "log":
                        assert isinstance(rec, LogRecord)
                        self._logs.setdefault(rec.session_id, []).append(rec)
                    elif kind == "leaf":
                        rid, leaf = rec
                        self._leaf_index[rid] = len(self._leaves)
                        self._leaves.append(leaf)
                    elif kind == "telemetry":
                        assert isinstance(rec, TelemetryEvent)
                        if rec.event_id not in self._spool_ids:
                            self._spool_seq += 1
                            self._spool_ids.add(rec.event_id)
                            self._spool.append(dataclasses.replace(rec, seq=self._spool_seq))
                    else:
                        assert isinstance(rec, ReceiptRecord)
                        self._receipts.setdefault(rec.session_id, []).append(rec)
                        self._by_id[rec.receipt_id] = rec
            except BaseException:
                self._inflight = inflight
                raise
            finally:
                self._pending = None

    # --- the transparency log ------------------------------------------------------------------------------
    def _insert_leaf(self, receipt_id: str, leaf: bytes) -> None:
        assert self._pending is not None
        self._pending.append(("leaf", (receipt_id, leaf)))

    def tree_size(self) -> int:
        with self._lock:
            return len(self._leaves)

    def tree_leaves(self, end: int, start: int = 0) -> list[bytes]:
        with self._lock:
            return self._leaves[max(start, 0):max(end, 0)]

    def tree_leaf_index(self, receipt_id: str) -> tuple[int, bytes] | None:
        with self._lock:
            i = self._leaf_index.get(receipt_id)
            return None if i is None else (i, self._leaves[i])

    def tree_head_append(self, head: TreeHead) -> None:
        with self._lock:
            self._tree_heads.append(head)

    def tree_heads(self, *, tree_size: int | None = None) -> list[TreeHead]:
        with self._lock:
            return [h for h in self._tree_heads if tree_size is None or h.tree_size == tree_size]

    def tree_head_latest(self) -> TreeHead | None:
        with self._lock:
            return self._tree_heads[-1] if self._tree_heads else None

    # --- actions in flight and owners' leases --------------------------------------------------------------
    def _insert_inflight(self, rec: InflightRecord) -> None:
        if (rec.session_id, rec.action_id) in self._inflight:
            raise StoreError(f"action `{rec.action_id}` of session `{rec.session_id}` already in flight")
        self._inflight[(rec.session_id, rec.action_id)] = rec

    def _inflight_owner(self, session_id: str, action_id: str) -> str | None:
        with self._lock:
            rec = self._inflight.get((session_id, action_id))
            return rec.owner if rec is not None else None

    def _set_inflight_owner(self, session_id: str, action_id: str, owner: str) -> None:
        key = (session_id, action_id)
        self._inflight[key] = dataclasses.replace(self._inflight[key], owner=owner)

    def _delete_inflight(self, session_id: str, action_id: str) -> None:
        self._inflight.pop((session_id, action_id), None)

    def inflight_list(self) -> list[InflightRecord]:
        with self._lock:
            return sorted((r for r in self._inflight.values() if r.owner != RECOVERED),
                          key=lambda r: (r.requested_at, r.session_id, r.log_seq))

    def owner_renew(self, owner: str, seconds: float) -> None:
        with self._lock:
            self._owners[owner] = lease_text(seconds)

    def owner_release(self, owner: str) -> None:
        with self._lock:
            self._owners.pop(owner, None)

    def owner_leases(self) -> dict[str, str]:
        with self._lock:
            return dict(self._owners)

    def owners_alive(self) -> set[str]:
        return {o for o, t in self.owner_leases().items() if lease_alive(t)}

    # --- the telemetry spool ------------------------------------------------------------------------------
    def _insert_telemetry(self, ev: TelemetryEvent) -> None:
        assert self._pending is not None
        self._pending.append(("telemetry", ev))

    def telemetry_read(self, after: int, limit: int) -> list[TelemetryEvent]:
        with self._lock:
            return [e for e in self._spool if (e.seq or 0) > after][:limit]

    def telemetry_cursor(self, sink: str) -> int:
        with self._lock:
            return self._cursors.get(sink, 0)

    def telemetry_set_cursor(self, sink: str, seq: int) -> None:
        with self._lock:
            self._cursors[sink] = seq

    def telemetry_trim(self, upto: int) -> int:
        with self._lock:
            keep = [e for e in self._spool if (e.seq or 0) > upto]
            n = len(self._spool) - len(keep)
            self._spool_ids.difference_update(e.event_id for e in self._spool[:n])
            self._spool = keep
            return n

    def telemetry_span(self) -> tuple[int, int, int]:
        with self._lock:
            return len(self._spool), (self._spool[0].seq or 0) if self._spool else 0, self._spool_seq

    def _staged(self, kind: str, session_id: str) -> list[LogRecord | ReceiptRecord]:
        return [r for k, r in (self._pending or []) if k == kind and r.session_id == session_id]

    def _log_head(self, session_id: str) -> tuple[int, str] | None:
        staged = self._staged("log", session_id)
        chain: list[LogRecord] = self._logs.get(session_id, []) + staged  # type: ignore[operator]
        return (chain[-1].seq, chain[-1].entry_hash) if chain else None

    def _insert_log(self, rec: LogRecord) -> None:
        assert self._pending is not None
        self._pending.append(("log", copy.deepcopy(rec)))

    def _receipt_head(self, session_id: str) -> tuple[int, str] | None:
        staged = self._staged("receipt", session_id)
        chain: list[ReceiptRecord] = self._receipts.get(session_id, []) + staged  # type: ignore[operator]
        return (chain[-1].seq, chain[-1].receipt_hash) if chain else None

    def _insert_receipt(self, rec: ReceiptRecord) -> None:
        assert self._pending is not None
        if rec.receipt_id in self._by_id:
            raise StoreError(f"receipt `{rec.receipt_id}` already stored")
        self._pending.append(("receipt", copy.deepcopy(rec)))

    def read_log(self, session_id: str, after: int | None = None) -> Iterator[LogRecord]:
        with self._lock:
            yield from [r for r in self._logs.get(session_id, []) if after is None or r.seq > after]

    def log_sessions(self) -> list[str]:
        with self._lock:
            return list(self._logs)

    def get_receipt(self, receipt_id: str) -> ReceiptRecord | None:
        with self._lock:
            return self._by_id.get(receipt_id)

    def read_receipts(self, session_id: str | None = None) -> Iterator[ReceiptRecord]:
        with self._lock:
            sessions = sorted(self._receipts) if session_id is None else [session_id]
            rows = [r for s in sessions for r in self._receipts.get(s, [])]
        yield from rows

    def pending_put(self, rec: PendingRecord) -> None:
        with self._lock:
            if rec.item_id in self._items:
                raise StoreError(f"pending item `{rec.item_id}` already stored")
            self._items[rec.item_id] = copy.deepcopy(dataclasses.replace(rec, version=0))

    def pending_get(self, item_id: str) -> PendingRecord | None:
        with self._lock:
            rec = self._items.get(item_id)
            return copy.deepcopy(rec) if rec else None

    def pending_list(self, *, kind: str | None = None, status: str | None = None,
                     session_id: str | None = None) -> list[PendingRecord]:
        with self._lock:
            return [copy.deepcopy(r) for r in sorted(self._items.values(), key=lambda r: (r.created_at, r.item_id))
                    if (kind is None or r.kind == kind) and (status is None or r.status == status)
                    and (session_id is None or r.session_id == session_id)]

    def pending_update(self, item_id: str, expect_version: int, **changes: Any) -> PendingRecord | None:
        if not set(changes) <= PENDING_FIELDS:
            raise ValueError(f"cannot change {sorted(set(changes) - PENDING_FIELDS)} of a pending item")
        with self._lock:
            rec = self._items.get(item_id)
            if rec is None or rec.version != expect_version:
                return None
            new = dataclasses.replace(rec, **copy.deepcopy(changes), version=rec.version + 1)
            self._items[item_id] = new
            return copy.deepcopy(new)

    def token_put(self, tok: ApiToken) -> None:
        with self._lock:
            if any(t.token_id == tok.token_id or t.digest == tok.digest for t in self._tokens.values()):
                raise StoreError(f"token `{tok.token_id}` already stored")
            self._tokens[tok.digest] = tok

    def token_by_digest(self, digest: str) -> ApiToken | None:
        with self._lock:
            return self._tokens.get(digest)

    def token_list(self) -> list[ApiToken]:
        with self._lock:
            return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.token_id))

    def token_revoke(self, token_id: str, at: str) -> bool:
        with self._lock:
            for d, t in self._tokens.items():
                if t.token_id == token_id and t.revoked_at is None:
                    self._tokens[d] = dataclasses.replace(t, revoked_at=at)
                    return True
            return False

    def revocation_put(self, rev: Revocation) -> tuple[Revocation, bool]:
        with self._lock:
            old = self._revocations.get((rev.kind, rev.value))
            if old is not None and old.in_force(rev.revoked_at):
                return old, False
            self._revocations[(rev.kind, rev.value)] = rev
            self._event("revoke", rev.kind, rev.value, rev.reason, rev.revoked_by, rev.revoked_at, rev.until)
            return rev, True

    def revocation_delete(self, kind: str, value: str, *, actor: str, at: str, reason: str) -> Revocation | None:
        with self._lock:
            old = self._revocations.pop((kind, value), None)
            if old is not None:
                self._event("unrevoke", kind, value, reason, actor, at, None)
            return old

    def _event(self, event: str, kind: str, value: str, reason: str, actor: str, at: str, until: str | None) -> None:
        self._revocation_events.append(RevocationEvent(len(self._revocation_events) + 1, event, kind, value,
                                                       reason, actor, at, until))

    def revocation_list(self, *, now: str | None = None) -> list[Revocation]:
        with self._lock:
            return sorted((r for r in self._revocations.values() if now is None or r.in_force(now)),
                          key=lambda r: (r.revoked_at, r.kind, r.value))

    def revocation_find(self, keys: Sequence[tuple[str, str]], *, now: str) -> Revocation | None:
        with self._lock:
            found = [r for r in (self._revocations.get(k) for k in keys) if r is not None and r.in_force(now)]
        return min(found, key=lambda r: (r.revoked_at, r.kind, r.value)) if found else None

    def revocation_history(self) -> list[RevocationEvent]:
        with self._lock:
            return list(self._revocation_events)

    def credential_event(self, ev: CredentialEvent) -> None:
        with self._lock:
            self._credentials.append(ev)

    def credential_events(self, *, credential_id: str | None = None, session_id: str | None = None,
                          action_id: str | None = None) -> list[CredentialEvent]:
        with self._lock:
            return [e for e in self._credentials
                    if (credential_id is None or e.credential_id == credential_id)
                    and (session_id is None or e.session_id == session_id)
                    and (action_id is None or e.action_id == action_id)]

    def close(self) -> None:
        pass
