"""In-memory backend: same contract, nothing durable. For tests and dry runs only."""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator

from aarmor.store.base import Store
from aarmor.store.records import LogRecord, ReceiptRecord

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    def __init__(self) -> None:
        self.url = "memory://"
        self._logs: dict[str, list[LogRecord]] = {}
        self._receipts: dict[str, list[ReceiptRecord]] = {}
        self._by_id: dict[str, ReceiptRecord] = {}
        self._lock = threading.RLock()
        self._pending: list[tuple[str, LogRecord | ReceiptRecord]] | None = None

    @contextlib.contextmanager
    def _txn(self) -> Iterator[None]:
        with self._lock:
            self._pending = []
            try:
                yield
                for kind, rec in self._pending:
                    if kind == "log":
                        assert isinstance(rec, LogRecord)
                        self._logs.setdefault(rec.session_id, []).append(rec)
                    else:
                        assert isinstance(rec, ReceiptRecord)
                        self._receipts.setdefault(rec.session_id, []).append(rec)
                        self._by_id[rec.receipt_id] = rec
            finally:
                self._pending = None

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
            from aarmor.errors import StoreError

            raise StoreError(f"receipt `{rec.receipt_id}` already stored")
        self._pending.append(("receipt", copy.deepcopy(rec)))

    def read_log(self, session_id: str) -> Iterator[LogRecord]:
        with self._lock:
            yield from list(self._logs.get(session_id, []))

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

    def close(self) -> None:
        pass
