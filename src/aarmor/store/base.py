"""The store contract and the invariants every backend shares.

INVARIANT (append-only chains): an entry is accepted only if its `seq` is the head's seq + 1 (0 for the
first) and its previous hash equals the head's hash (`GENESIS` for the first). Backends implement the
`_`-prefixed reads and writes inside one transaction (`_txn`); this class checks the invariant there, so
two writers cannot fork a chain. Nothing of a chain is ever updated or deleted through this interface
(pending items, API tokens and identity revocations are state, not chains: they change, and revocations
keep an append-only history of every change).

INVARIANT (transparency log, docs/transparency.md): every receipt stored gets, in the same transaction,
the next leaf of one global append-only Merkle tree: leaf i is the i-th receipt committed, its hash
`receipt_leaf(receipt_hash)`. Leaves and tree heads are never updated or deleted through this interface.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aarmor.errors import ChainError, StoreError
from aarmor.store.records import (
    GENESIS,
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

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.telemetry.events import TelemetryEvent

__all__ = ["PENDING_FIELDS", "Store", "receipt_leaf"]

#: a chain's head: (seq, hash) of its last entry, None for an empty chain
Head = tuple[int, str] | None

log = logging.getLogger("aarmor.store")

#: the fields of a pending item that `pending_update` may change
PENDING_FIELDS = frozenset({"status", "deadline", "owner", "lease_until", "body", "outcome"})


def receipt_leaf(receipt_hash: str) -> bytes:
    """The transparency-log leaf hash of a receipt: RFC 6962 SHA-256(0x00 || leaf data), the leaf data
    being the ASCII text of its `receipt_hash` (`sha256:<hex>`), which commits to the whole signed receipt
    (aarmor.receipts.sign). Kept here, not in aarmor.receipts, so the store needs no receipts import."""
    return hashlib.sha256(b"\x00" + receipt_hash.encode("ascii")).digest()


class Store(ABC):
    """Durable, append-only storage for context logs and receipts."""

    url: str
    #: with telemetry configured: the events a commit's log entries and receipts stand for, spooled in the
    #: same transaction (aarmor.telemetry.events.project); None: no spool writes at all
    telemetry_projector: Callable[[Sequence[LogRecord], Sequence[ReceiptRecord]], list[TelemetryEvent]] | None = None
    #: the Guard whose actions this connection records as in flight (`InflightRecord.owner`); None: this
    #: connection tracks nothing in flight (a store opened by the CLI or a test, not by a Guard)
    owner: str | None = None

    # --- backend primitives -------------------------------------------------------------------
    @abstractmethod
    def _txn(self) -> contextlib.AbstractContextManager[None]:
        """An exclusive write transaction: commits on exit, rolls back on error."""

    @abstractmethod
    def _log_head(self, session_id: str) -> tuple[int, str] | None: ...

    @abstractmethod
    def _insert_log(self, rec: LogRecord) -> None: ...

    @abstractmethod
    def _receipt_head(self, session_id: str) -> tuple[int, str] | None: ...

    @abstractmethod
    def _insert_receipt(self, rec: ReceiptRecord) -> None: ...

    @abstractmethod
    def read_log(self, session_id: str, after: int | None = None) -> Iterator[LogRecord]:
        """Entries of one session ordered by seq: every stored one (None), or those with seq > `after`.

        INVARIANT: with no `after`, nothing stored is filtered out, whatever its seq: a row whose seq was
        edited (say to -1) must reach the chain check and fail it, not vanish from the read."""

    @abstractmethod
    def log_sessions(self) -> list[str]:
        """Ids of every session with a context log, in first-seen order."""

    @abstractmethod
    def get_receipt(self, receipt_id: str) -> ReceiptRecord | None: ...

    @abstractmethod
    def read_receipts(self, session_id: str | None = None) -> Iterator[ReceiptRecord]:
        """Receipts of one session (or all), ordered by session then seq."""

    @abstractmethod
    def close(self) -> None: ...

    # --- pending approvals and deferrals (compare-and-set, shared between processes) -------------
    @abstractmethod
    def pending_put(self, rec: PendingRecord) -> None:
        """Insert a new item (`version` 0). Raises StoreError if the id exists."""

    @abstractmethod
    def pending_get(self, item_id: str) -> PendingRecord | None: ...

    @abstractmethod
    def pending_list(self, *, kind: str | None = None, status: str | None = None,
                     session_id: str | None = None) -> list[PendingRecord]:
        """Items filtered by kind, status and session, oldest first."""

    @abstractmethod
    def pending_update(self, item_id: str, expect_version: int, **changes: Any) -> PendingRecord | None:
        """Apply `changes` (status, deadline, owner, lease_until, body, outcome) if the stored version is
        still `expect_version`; return the new record (version + 1), or None if someone else changed it
        first or the item does not exist.

        INVARIANT: of several updates from the same version, exactly one succeeds.
        """

    # --- API tokens (only digests are stored) ------------------------------------------------------
    @abstractmethod
    def token_put(self, tok: ApiToken) -> None: ...

    @abstractmethod
    def token_by_digest(self, digest: str) -> ApiToken | None: ...

    @abstractmethod
    def token_list(self) -> list[ApiToken]: ...

    @abstractmethod
    def token_revoke(self, token_id: str, at: str) -> bool:
        """Mark a token revoked; False if there is no such (unrevoked) token."""

    # --- identity revocations (AARM R6; aarmor.identity.revocation validates what goes in) ----------------
    @abstractmethod
    def revocation_put(self, rev: Revocation) -> tuple[Revocation, bool]:
        """Revoke `rev.kind` = `rev.value` and record a `revoke` event, in one transaction.

        Idempotent: if a revocation of the same kind and value is already in force at `rev.revoked_at`, it
        is kept unchanged (its reason, author and time stay the first ones) and returned with False.
        Returns the revocation in force and whether this call made it.
        """

    @abstractmethod
    def revocation_delete(self, kind: str, value: str, *, actor: str, at: str, reason: str) -> Revocation | None:
        """Lift a revocation and record an `unrevoke` event, in one transaction; None if there was none."""

    @abstractmethod
    def revocation_list(self, *, now: str | None = None) -> list[Revocation]:
        """Revocations, oldest first; with `now`, only those still in force then (`until` unset or later)."""

    @abstractmethod
    def revocation_find(self, keys: Sequence[tuple[str, str]], *, now: str) -> Revocation | None:
        """The earliest revocation in force at `now` among `(kind, value)` keys, or None.

        On the path of every decision: one indexed read, no cache (a revocation written by any process is
        seen by the next call).
        """

    @abstractmethod
    def revocation_history(self) -> list[RevocationEvent]:
        """Every revoke and unrevoke, in the order they happened."""

    # --- the credential log (AARM R9), append-only ----------------------------------------------------
    @abstractmethod
    def credential_event(self, ev: CredentialEvent) -> None:
        """Append one credential event (durably, like every other write)."""

    @abstractmethod
    def credential_events(self, *, credential_id: str | None = None, session_id: str | None = None,
                          action_id: str | None = None) -> list[CredentialEvent]:
        """Events filtered by credential, session and action, in the order they were written."""

    def session_lock(self, session_id: str) -> contextlib.AbstractContextManager[None]:
        """Hold off other processes' appends to `session_id` (a writer that lost a race catches up under it).

        SQLite and memory serialise every write already (a no-op here); PostgreSQL takes the session's
        advisory lock, the one every append to that session waits for.
        """
        return contextlib.nullcontext()

    # --- the telemetry spool (AARM R8; aarmor.telemetry.exporter reads it) -----------------------------
    @abstractmethod
    def _insert_telemetry(self, ev: TelemetryEvent) -> None:
        """Spool one event inside the current transaction (an event id already spooled is ignored)."""

    def telemetry_append(self, events: Sequence[TelemetryEvent]) -> None:
        """Spool process-level events (policy, verification, the exporter's alerts) in one commit."""
        with self._txn():
            for ev in events:
                self._insert_telemetry(ev)

    @abstractmethod
    def telemetry_read(self, after: int, limit: int) -> list[TelemetryEvent]:
        """Spooled events with `seq` > `after`, in spool order, at most `limit`; each has its `seq` set."""

    @abstractmethod
    def telemetry_cursor(self, sink: str) -> int:
        """The last spool seq `sink` has been given (0: none)."""

    @abstractmethod
    def telemetry_set_cursor(self, sink: str, seq: int) -> None: ...

    @abstractmethod
    def telemetry_trim(self, upto: int) -> int:
        """Delete spooled events with seq <= `upto` (every sink has them); returns how many."""

    @abstractmethod
    def telemetry_span(self) -> tuple[int, int, int]:
        """(events in the spool, lowest seq, highest seq ever assigned); (0, 0, last) when empty."""

    # --- the receipt transparency log (aarmor.receipts.transparency; docs/transparency.md) ----------------
    @abstractmethod
    def _insert_leaf(self, receipt_id: str, leaf: bytes) -> None:
        """Append the next leaf (index = the number of leaves before it) inside the current transaction.
        Called by the appends below right after `_insert_receipt`, never on its own."""

    @abstractmethod
    def tree_size(self) -> int:
        """The number of leaves (committed receipts since the log began)."""

    @abstractmethod
    def tree_leaves(self, end: int, start: int = 0) -> list[bytes]:
        """Leaf hashes with index in [start, end), in index order (fewer if the log is shorter)."""

    @abstractmethod
    def tree_leaf_index(self, receipt_id: str) -> tuple[int, bytes] | None:
        """(index, leaf hash) of a receipt's leaf, or None if it has none."""

    @abstractmethod
    def tree_head_append(self, head: TreeHead) -> None:
        """Record a published signed tree head (append-only; several heads may have the same size)."""

    @abstractmethod
    def tree_heads(self, *, tree_size: int | None = None) -> list[TreeHead]:
        """Published tree heads in publication order; with `tree_size`, only the heads of that size."""

    @abstractmethod
    def tree_head_latest(self) -> TreeHead | None:
        """The head published last, or None."""

    # --- actions in flight and their owners' leases (crash recovery, docs/durability.md) ----------------
    @abstractmethod
    def _insert_inflight(self, rec: InflightRecord) -> None: ...

    @abstractmethod
    def _inflight_owner(self, session_id: str, action_id: str) -> str | None:
        """The owner of an in-flight action, or None if it is not tracked (inside or outside a transaction)."""

    @abstractmethod
    def _set_inflight_owner(self, session_id: str, action_id: str, owner: str) -> None: ...

    @abstractmethod
    def _delete_inflight(self, session_id: str, action_id: str) -> None: ...

    @abstractmethod
    def inflight_list(self) -> list[InflightRecord]:
        """Actions requested and not yet ended (recovered tombstones left out), oldest first."""

    @abstractmethod
    def owner_renew(self, owner: str, seconds: float) -> None:
        """Insert or extend `owner`'s lease: it is alive for `seconds` from now, by the store's lease clock
        (never the caller's wall clock: docs/durability.md "Clock jumps")."""

    @abstractmethod
    def owner_release(self, owner: str) -> None:
        """Forget `owner`'s lease (a clean shutdown): what it left in flight is recoverable at once."""

    @abstractmethod
    def owner_leases(self) -> dict[str, str]:
        """Every owner's stored lease, by owner (its text is the backend's: for inspection)."""

    @abstractmethod
    def owners_alive(self) -> set[str]:
        """The owners whose lease still runs, judged by the same clock that `owner_renew` wrote it with."""

    def inflight_owner(self, session_id: str, action_id: str) -> str | None:
        return self._inflight_owner(session_id, action_id)

    def inflight_claim(self, session_id: str, action_id: str, expect_owner: str) -> bool:
        """Take an in-flight action over from `expect_owner` (a dead process) for `self.owner`.

        INVARIANT: of several claims from the same owner, exactly one succeeds (compare-and-set inside one
        write transaction), so only one process writes the recovered receipt.
        """
        if self.owner is None:
            raise RuntimeError("a store without an owner cannot claim in-flight actions")
        if expect_owner == RECOVERED:
            return False  # a tombstone: its end is recorded already
        with self._txn():
            if self._inflight_owner(session_id, action_id) != expect_owner:
                return False
            self._set_inflight_owner(session_id, action_id, self.owner)
            return True

    def _inflight_owners(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Inside a write: the owners of these in-flight actions, by (session, action); an action not tracked
        is absent. A backend with row locks locks the rows (so a recovery's claim and this process's outcome
        serialise) and may read them in one query."""
        owners = {}
        for sid, aid in keys:
            held = self._inflight_owner(sid, aid)
            if held is not None:
                owners[(sid, aid)] = held
        return owners

    def _track_inflight(self, logs: Sequence[LogRecord], receipts: Sequence[ReceiptRecord]) -> list[Callable[[], None]]:
        """Inside `append_all`'s transaction, before anything is written: what the commit does to the in-flight
        rows (a requested entry starts one, an outcome ends it, a recovered receipt turns it into a
        tombstone), as writes to run once every check passed.

        Raises:
            StoreError: the action is held by another owner (crash recovery took it over: this process was
                taken for dead), so its outcome would be a second one.
        """
        started: dict[tuple[str, str], LogRecord] = {}
        ends: list[tuple[str, str, bool]] = []
        for rec in logs:
            if rec.kind == "action_requested":  # aarmor.context.entries.ACTION_REQUESTED
                started[(rec.session_id, str(rec.body["action"]["action_id"]))] = rec
            elif rec.kind == "action_outcome" and not rec.body.get("recovered"):
                ends.append((rec.session_id, str(rec.body["action_id"]), False))
        ends += [(r.session_id, r.action_id, True) for r in receipts
                 if (r.body.get("enforcement") or {}).get("recovered")]
        held = self._inflight_owners([(sid, aid) for sid, aid, _ in ends if (sid, aid) not in started])
        writes: list[Callable[[], None]] = []
        for sid, aid, recovered in ends:
            if (sid, aid) in started and not recovered:
                del started[(sid, aid)]  # requested and ended in this one commit: never in flight
                continue
            owner = held.get((sid, aid))
            if owner is None:
                continue  # not tracked: requested before tracking existed, or through a store without an owner
            if owner != self.owner:
                raise StoreError(f"action `{aid}` of session `{sid}` is held by `{owner}`, not by "
                                 f"`{self.owner}`: crash recovery has ended it (this process was taken for dead); "
                                 "its outcome is refused so that it has exactly one")
            if recovered:
                writes.append(functools.partial(self._set_inflight_owner, sid, aid, RECOVERED))
            else:
                writes.append(functools.partial(self._delete_inflight, sid, aid))
        for (sid, aid), rec in started.items():
            row = InflightRecord(sid, aid, rec.seq, str(self.owner), rec.recorded_at)
            writes.insert(0, functools.partial(self._insert_inflight, row))
        return writes

    # --- invariant-checked appends ------------------------------------------------------------
    def log_head(self, session_id: str) -> tuple[int, str] | None:
        return self._log_head(session_id)

    def receipt_head(self, session_id: str) -> tuple[int, str] | None:
        return self._receipt_head(session_id)

    def append_log(self, rec: LogRecord) -> None:
        """Append one context log entry.

        Raises:
            ChainError: the entry does not extend the session's head (wrong seq or previous hash).
            StoreError: the backend could not write durably.
        """
        with self._txn():
            _check_link(self._log_head(rec.session_id), rec.seq, rec.prev_hash, rec.session_id, "log")
            self._insert_log(rec)

    def append_receipt(self, rec: ReceiptRecord) -> None:
        """Append one receipt to its session's receipt chain.

        Raises:
            ChainError: the receipt does not extend the session's receipt chain.
            StoreError: the backend could not write durably.
        """
        with self._txn():
            _check_link(self._receipt_head(rec.session_id), rec.seq, rec.prev_receipt_hash, rec.session_id,
                        "receipt")
            self._insert_receipt(rec)
            self._insert_leaf(rec.receipt_id, receipt_leaf(rec.receipt_hash))

    def _read_heads(self, session_ids: Sequence[str]) -> dict[str, tuple[Head, Head]]:
        """Inside a write: each session's (log head, receipt head). A backend may read them in one query."""
        return {sid: (self._log_head(sid), self._receipt_head(sid)) for sid in session_ids}

    def append_all(self, logs: tuple[LogRecord, ...] = (), receipts: tuple[ReceiptRecord, ...] = ()) -> None:
        """Append several entries atomically (one durable commit): all of them or none.

        Every check (chain links, in-flight owners) runs before the first write, so a refused commit sends
        nothing, and a backend may send all the writes in one batch.

        Raises:
            ChainError: any entry does not extend its chain (then nothing is written).
            StoreError: the backend could not write durably.
        """
        with self._txn():
            self._append_all(logs, receipts)

    def _append_all(self, logs: Sequence[LogRecord], receipts: Sequence[ReceiptRecord]) -> None:
        heads = self._read_heads(list(dict.fromkeys([r.session_id for r in logs] + [r.session_id for r in receipts])))
        log_heads = {sid: h[0] for sid, h in heads.items()}
        receipt_heads = {sid: h[1] for sid, h in heads.items()}
        for rec in logs:  # several entries of one session in one commit: each extends the one before it
            _check_link(log_heads[rec.session_id], rec.seq, rec.prev_hash, rec.session_id, "log")
            log_heads[rec.session_id] = (rec.seq, rec.entry_hash)
        for r in receipts:
            _check_link(receipt_heads[r.session_id], r.seq, r.prev_receipt_hash, r.session_id, "receipt")
            receipt_heads[r.session_id] = (r.seq, r.receipt_hash)
        inflight = self._track_inflight(logs, receipts) if self.owner is not None else []
        for rec in logs:
            self._insert_log(rec)
        for r in receipts:
            self._insert_receipt(r)
            self._insert_leaf(r.receipt_id, receipt_leaf(r.receipt_hash))
        for write in inflight:
            write()
        if self.telemetry_projector is not None:
            for ev in self._project(logs, receipts):
                self._insert_telemetry(ev)

    def _project(self, logs: Sequence[LogRecord], receipts: Sequence[ReceiptRecord]) -> list[TelemetryEvent]:
        """The commit's events. A projection that fails (a bug) must not fail the commit, and must not lose
        events silently either: it becomes a counted `telemetry.dropped` event naming the records."""
        assert self.telemetry_projector is not None
        try:
            return self.telemetry_projector(logs, receipts)
        except Exception as exc:
            from aarmor.telemetry.events import system_event

            log.exception("telemetry projection failed")
            first = logs[0] if logs else None
            at = first.recorded_at if first is not None else (receipts[0].timestamp if receipts else "")
            return [system_event("telemetry.dropped", time=at, severity="high",
                                 source=f"projection|{first.entry_hash if first else at}",
                                 alert={"kind": "projection_failed", "message": f"{type(exc).__name__}: {exc}",
                                        "detail": {"dropped": len(logs) + len(receipts),
                                                   "session_id": first.session_id if first else None}})]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sql_filter(placeholder: str, **equal: object) -> tuple[str, tuple[object, ...]]:
    """` WHERE col=? AND ...` for the filters that are set (None: no filter), and their values, for the SQL
    backends (`placeholder` is `?` for SQLite, `%s` for PostgreSQL). Column names are the keyword names,
    never input."""
    cols = [c for c, v in equal.items() if v is not None]
    where = " WHERE " + " AND ".join(f"{c}={placeholder}" for c in cols) if cols else ""
    return where, tuple(equal[c] for c in cols)


def _check_link(head: tuple[int, str] | None, seq: int, prev: str, session_id: str, what: str) -> None:
    want_seq, want_prev = (0, GENESIS) if head is None else (head[0] + 1, head[1])
    if seq != want_seq or prev != want_prev:
        raise ChainError(
            f"{what} chain of session `{session_id}`: expected seq {want_seq} after `{want_prev}`, "
            f"found seq {seq} after `{prev}`",
            session_id=session_id, seq=seq,
        )
