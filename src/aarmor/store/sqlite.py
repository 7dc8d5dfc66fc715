"""SQLite backend (the embedded default): one file, WAL journal, exclusive write transactions.

Writers in several processes serialise on `BEGIN IMMEDIATE`, so the chain invariant checked inside the
transaction holds across processes. `synchronous=FULL` by default: a commit that returned survives a
power cut; `?synchronous=normal` in the URL trades that for speed (documented in docs/configuration.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aarmor.errors import StoreError
from aarmor.store.base import PENDING_FIELDS, Store, receipt_leaf, sql_filter
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

__all__ = ["SqliteStore"]

SCHEMA_VERSION = 6
#: versions this code upgrades in place on open (the tables they lack are created by `_SCHEMA`):
#: 1 -> pending, api_tokens; 2 -> revocations, revocation_events; 3 -> credential_log; 4 -> telemetry spool;
#: 5 -> the transparency log (merkle_leaves, backfilled from the receipts already stored, and tree_heads), and
#:      inflight, owners (crash recovery: actions requested before the upgrade are not tracked)
_UPGRADES_FROM = {1, 2, 3, 4, 5}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log_entries (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    recorded_at TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    receipt_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, seq INTEGER NOT NULL, action_id TEXT NOT NULL,
    timestamp TEXT NOT NULL, tool TEXT NOT NULL, operation TEXT NOT NULL, decision TEXT NOT NULL,
    policy_id TEXT, human TEXT, receipt_hash TEXT NOT NULL, body TEXT NOT NULL,
    UNIQUE (session_id, seq)
);
CREATE INDEX IF NOT EXISTS receipts_ts ON receipts (timestamp);
CREATE INDEX IF NOT EXISTS receipts_human ON receipts (human);
CREATE INDEX IF NOT EXISTS receipts_decision ON receipts (decision);
CREATE INDEX IF NOT EXISTS receipts_action ON receipts (action_id);
CREATE TABLE IF NOT EXISTS pending (
    item_id TEXT PRIMARY KEY, kind TEXT NOT NULL, session_id TEXT NOT NULL, action_id TEXT NOT NULL,
    status TEXT NOT NULL, created_at TEXT NOT NULL, deadline TEXT NOT NULL, owner TEXT NOT NULL,
    lease_until TEXT NOT NULL, body TEXT NOT NULL, outcome TEXT, version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_status ON pending (kind, status);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL, revoked_by TEXT NOT NULL,
    revoked_at TEXT NOT NULL, until TEXT, PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocation_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    reason TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL, until TEXT
);
CREATE TABLE IF NOT EXISTS credential_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, credential_id TEXT NOT NULL, event TEXT NOT NULL, at TEXT NOT NULL,
    session_id TEXT NOT NULL, action_id TEXT NOT NULL, tool TEXT NOT NULL, kind TEXT NOT NULL,
    scope TEXT NOT NULL, expires_at TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS credential_log_credential ON credential_log (credential_id);
CREATE INDEX IF NOT EXISTS credential_log_session ON credential_log (session_id);
CREATE TABLE IF NOT EXISTS telemetry_spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry_cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merkle_leaves (
    leaf_index INTEGER PRIMARY KEY, receipt_id TEXT NOT NULL UNIQUE, leaf_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tree_heads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tree_size INTEGER NOT NULL, root_hash TEXT NOT NULL,
    timestamp TEXT NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tree_heads_size ON tree_heads (tree_size);
CREATE TABLE IF NOT EXISTS inflight (
    session_id TEXT NOT NULL, action_id TEXT NOT NULL, log_seq INTEGER NOT NULL, owner TEXT NOT NULL,
    requested_at TEXT NOT NULL, PRIMARY KEY (session_id, action_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, lease_until TEXT NOT NULL) WITHOUT ROWID;
"""

#: keys per revocation lookup: each is one `(kind=? AND value=?)` term of an OR, which SQLite answers with
#: one primary-key search per term ("MULTI-INDEX OR"); the bound keeps the expression far below SQLite's
#: depth limit (1000) for any delegation chain
_FIND_CHUNK = 100


@functools.lru_cache(maxsize=_FIND_CHUNK)
def find_revocation_sql(n: int) -> str:
    """The revocation lookup for `n` (kind, value) keys, then `now` (tests check its query plan)."""
    return ("SELECT * FROM revocations WHERE (" + " OR ".join(["(kind=? AND value=?)"] * n) +
            ") AND (until IS NULL OR until > ?)")

_SYNC = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}

# The stored body text is `json.dumps(body, separators=(",", ":"))`. One encoder built once gives the
# same text (json.dumps builds an identical JSONEncoder on every call when any option is given).
_dumps = json.JSONEncoder(separators=(",", ":")).encode

#: chain heads remembered across transactions (beyond this many sessions the memo is simply cleared)
_MAX_HEADS = 4096


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        if synchronous not in _SYNC:
            raise StoreError(f"sqlite synchronous `{synchronous}` is not one of {', '.join(_SYNC)}")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={_SYNC[synchronous]}")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            found = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
            if int(found) in _UPGRADES_FROM:
                found = self._upgrade()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store `{self.path}`: {exc}") from exc
        if int(found) != SCHEMA_VERSION:
            raise StoreError(f"store `{self.path}` has schema version {found}, expected {SCHEMA_VERSION}")
        self._lock = threading.RLock()
        self._closed = False
        # Head memo: the chain heads this connection read or wrote, so that a write transaction need
        # not re-read them (a head read costs more than the insert: `entry_hash` sits behind the body's
        # overflow pages). Keyed by (table, session_id).
        # INVARIANT: the memo is used only inside a write transaction (the write lock is held, no one
        # else can move a head) and only if the database is unchanged since our last commit: the same
        # `PRAGMA data_version` (which moves whenever ANY other connection, in any process, commits)
        # and the same `total_changes` (which moves if this connection wrote outside these methods).
        # Otherwise, or after any failed transaction, it is dropped and heads are read from disk.
        self._heads: dict[tuple[str, str], tuple[int, str] | None] = {}
        self._seen: tuple[int, int] | None = None  # (data_version, total_changes) after our last commit
        self._in_txn = False

    def _upgrade(self) -> int:
        """Move an older store to SCHEMA_VERSION in one transaction (two processes opening it at once:
        the second sees the new version and does nothing). Receipts stored before version 6 become the
        first leaves of the transparency log, in their insertion (rowid) order."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            found = int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            if found in _UPGRADES_FROM:
                if found < 6 and not self._db.execute("SELECT 1 FROM merkle_leaves LIMIT 1").fetchone():
                    rows = self._db.execute("SELECT receipt_id, receipt_hash FROM receipts ORDER BY rowid").fetchall()
                    self._db.executemany("INSERT INTO merkle_leaves VALUES (?,?,?)",
                                         ((i, rid, receipt_leaf(h)) for i, (rid, h) in enumerate(rows)))
                self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
                found = SCHEMA_VERSION
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        return found

    @contextlib.contextmanager
    def _txn(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"cannot begin a write on `{self.path}`: {exc}") from exc
            if self._seen != (version, self._db.total_changes) or len(self._heads) > _MAX_HEADS:
                self._heads.clear()
            self._in_txn = True
            try:
                yield
                self._db.execute("COMMIT")
                self._seen = (version, self._db.total_changes)
            except BaseException as exc:
                self._heads.clear()
                self._seen = None
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"write to `{self.path}` failed: {exc}") from exc
                raise
            finally:
                self._in_txn = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store already closed")

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        with self._lock:
            self._check_open()
            try:
                row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"read from `{self.path}` failed: {exc}") from exc
            return row

    def _all(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            self._check_open()
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"read from `{self.path}` failed: {exc}") from exc

    def _head(self, table: str, session_id: str, sql: str) -> tuple[int, str] | None:
        key = (table, session_id)
        # under the store lock: another thread sees `_in_txn` only once it owns the transaction, so it
        # never reads a head staged (and perhaps rolled back) by a transaction in progress
        with self._lock:
            if self._in_txn and key in self._heads:  # INVARIANT: see `_heads` in __init__
                return self._heads[key]
            row = self._one(sql, (session_id,))
            head = (int(row[0]), str(row[1])) if row else None  # type: ignore[call-overload]
            if self._in_txn:
                self._heads[key] = head
            return head

    def _log_head(self, session_id: str) -> tuple[int, str] | None:
        return self._head("log", session_id, "SELECT seq, entry_hash FROM log_entries WHERE session_id=? "
                                             "ORDER BY seq DESC LIMIT 1")

    def _insert_log(self, rec: LogRecord) -> None:
        self._db.execute(
            "INSERT INTO log_entries VALUES (?,?,?,?,?,?,?)",
            (rec.session_id, rec.seq, rec.kind, _dumps(rec.body), rec.recorded_at, rec.prev_hash, rec.entry_hash),
        )
        self._heads[("log", rec.session_id)] = (rec.seq, rec.entry_hash)

    def _receipt_head(self, session_id: str) -> tuple[int, str] | None:
        return self._head("receipt", session_id, "SELECT seq, receipt_hash FROM receipts WHERE session_id=? "
                                                 "ORDER BY seq DESC LIMIT 1")

    def _insert_receipt(self, r: ReceiptRecord) -> None:
        self._db.execute(
            "INSERT INTO receipts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (r.receipt_id, r.session_id, r.seq, r.action_id, r.timestamp, r.tool, r.operation, r.decision,
             r.policy_id, r.human, r.receipt_hash, _dumps(r.body)),
        )
        self._heads[("receipt", r.session_id)] = (r.seq, r.receipt_hash)

    def read_log(self, session_id: str, after: int | None = None) -> Iterator[LogRecord]:
        if after is None:
            rows = self._all("SELECT * FROM log_entries WHERE session_id=? ORDER BY seq", (session_id,))
        else:
            rows = self._all("SELECT * FROM log_entries WHERE session_id=? AND seq>? ORDER BY seq",
                             (session_id, after))
        for s, seq, kind, body, at, prev, h in rows:
            yield LogRecord(str(s), int(seq), str(kind), json.loads(str(body)), str(at), str(prev), str(h))  # type: ignore[call-overload]

    def log_sessions(self) -> list[str]:
        rows = self._all("SELECT session_id FROM log_entries WHERE seq=0 ORDER BY recorded_at, session_id", ())
        return [str(r[0]) for r in rows]

    @staticmethod
    def _receipt(row: tuple[object, ...]) -> ReceiptRecord:
        rid, sid, seq, aid, ts, tool, op, dec, pid, human, h, body = row
        return ReceiptRecord(str(rid), str(sid), int(seq), str(aid), str(ts), str(tool), str(op),  # type: ignore[call-overload]
                             str(dec), None if pid is None else str(pid), None if human is None else str(human),
                             str(h), json.loads(str(body)))

    def get_receipt(self, receipt_id: str) -> ReceiptRecord | None:
        row = self._one("SELECT * FROM receipts WHERE receipt_id=?", (receipt_id,))
        return self._receipt(row) if row else None

    def read_receipts(self, session_id: str | None = None) -> Iterator[ReceiptRecord]:
        if session_id is None:
            rows = self._all("SELECT * FROM receipts ORDER BY session_id, seq", ())
        else:
            rows = self._all("SELECT * FROM receipts WHERE session_id=? ORDER BY seq", (session_id,))
        for row in rows:
            yield self._receipt(row)

    # --- pending approvals and deferrals ------------------------------------------------------------
    @staticmethod
    def _pending(row: tuple[Any, ...]) -> PendingRecord:
        iid, kind, sid, aid, status, created, deadline, owner, lease, body, outcome, version = row
        return PendingRecord(iid, kind, sid, aid, status, created, deadline, owner, lease, json.loads(body),
                             None if outcome is None else json.loads(outcome), int(version))

    def pending_put(self, rec: PendingRecord) -> None:
        with self._txn():
            try:
                self._db.execute(
                    "INSERT INTO pending VALUES (?,?,?,?,?,?,?,?,?,?,?,0)",
                    (rec.item_id, rec.kind, rec.session_id, rec.action_id, rec.status, rec.created_at,
                     rec.deadline, rec.owner, rec.lease_until, _dumps(rec.body),
                     None if rec.outcome is None else _dumps(rec.outcome)))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"pending item `{rec.item_id}` already stored") from exc

    def pending_get(self, item_id: str) -> PendingRecord | None:
        row = self._one("SELECT * FROM pending WHERE item_id=?", (item_id,))
        return self._pending(row) if row else None

    def pending_list(self, *, kind: str | None = None, status: str | None = None,
                     session_id: str | None = None) -> list[PendingRecord]:
        where, args = sql_filter("?", kind=kind, status=status, session_id=session_id)
        return [self._pending(r) for r in self._all("SELECT * FROM pending" + where + " ORDER BY created_at, item_id",
                                                    args)]

    def pending_update(self, item_id: str, expect_version: int, **changes: Any) -> PendingRecord | None:
        if not set(changes) <= PENDING_FIELDS:
            raise ValueError(f"cannot change {sorted(set(changes) - PENDING_FIELDS)} of a pending item")
        cols = sorted(changes)
        vals = [(_dumps(changes[c]) if changes[c] is not None else None) if c in ("body", "outcome")
                else changes[c] for c in cols]
        with self._txn():
            cur = self._db.execute(
                "UPDATE pending SET " + "".join(f"{c}=?, " for c in cols) + "version=version+1 "
                "WHERE item_id=? AND version=?", (*vals, item_id, expect_version))
            if cur.rowcount != 1:
                return None
            row = self._db.execute("SELECT * FROM pending WHERE item_id=?", (item_id,)).fetchone()
        return self._pending(row)

    # --- API tokens -----------------------------------------------------------------------------------
    def token_put(self, tok: ApiToken) -> None:
        with self._txn():
            try:
                self._db.execute("INSERT INTO api_tokens VALUES (?,?,?,?,?,?)",
                                 (tok.token_id, tok.digest, tok.name, tok.role, tok.created_at, tok.revoked_at))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"token `{tok.token_id}` already stored") from exc

    def token_by_digest(self, digest: str) -> ApiToken | None:
        row = self._one("SELECT * FROM api_tokens WHERE digest=?", (digest,))
        return ApiToken(*row) if row else None  # type: ignore[arg-type]

    def token_list(self) -> list[ApiToken]:
        return [ApiToken(*r) for r in self._all("SELECT * FROM api_tokens ORDER BY created_at, token_id", ())]  # type: ignore[arg-type]

    def token_revoke(self, token_id: str, at: str) -> bool:
        with self._txn():
            cur = self._db.execute("UPDATE api_tokens SET revoked_at=? WHERE token_id=? AND revoked_at IS NULL",
                                   (at, token_id))
            return cur.rowcount == 1

    # --- identity revocations -----------------------------------------------------------------------
    def revocation_put(self, rev: Revocation) -> tuple[Revocation, bool]:
        with self._txn():
            row = self._db.execute("SELECT * FROM revocations WHERE kind=? AND value=? AND "
                                   "(until IS NULL OR until > ?)", (rev.kind, rev.value, rev.revoked_at)).fetchone()
            if row is not None:
                return Revocation(*row), False
            self._db.execute("INSERT OR REPLACE INTO revocations VALUES (?,?,?,?,?,?)",
                             (rev.kind, rev.value, rev.reason, rev.revoked_by, rev.revoked_at, rev.until))
            self._revocation_event("revoke", rev.kind, rev.value, rev.reason, rev.revoked_by, rev.revoked_at,
                                   rev.until)
        return rev, True

    def revocation_delete(self, kind: str, value: str, *, actor: str, at: str, reason: str) -> Revocation | None:
        with self._txn():
            row = self._db.execute("SELECT * FROM revocations WHERE kind=? AND value=?", (kind, value)).fetchone()
            if row is None:
                return None
            self._db.execute("DELETE FROM revocations WHERE kind=? AND value=?", (kind, value))
            self._revocation_event("unrevoke", kind, value, reason, actor, at, None)
        return Revocation(*row)

    def _revocation_event(self, event: str, kind: str, value: str, reason: str, actor: str, at: str,
                          until: str | None) -> None:
        self._db.execute("INSERT INTO revocation_events (event, kind, value, reason, actor, at, until) "
                         "VALUES (?,?,?,?,?,?,?)", (event, kind, value, reason, actor, at, until))

    def revocation_list(self, *, now: str | None = None) -> list[Revocation]:
        if now is None:
            rows = self._all("SELECT * FROM revocations ORDER BY revoked_at, kind, value", ())
        else:
            rows = self._all("SELECT * FROM revocations WHERE until IS NULL OR until > ? "
                             "ORDER BY revoked_at, kind, value", (now,))
        return [Revocation(*r) for r in rows]  # type: ignore[arg-type]

    def revocation_find(self, keys: Sequence[tuple[str, str]], *, now: str) -> Revocation | None:
        unique = list(dict.fromkeys(keys))
        rows: list[tuple[object, ...]] = []
        for i in range(0, len(unique), _FIND_CHUNK):
            chunk = unique[i:i + _FIND_CHUNK]
            rows += self._all(find_revocation_sql(len(chunk)), (*(x for key in chunk for x in key), now))
        if not rows:
            return None
        # at most one row per key: the earliest revocation, sorted here rather than by SQLite (no temp b-tree)
        return min((Revocation(*r) for r in rows), key=lambda r: (r.revoked_at, r.kind, r.value))  # type: ignore[arg-type]

    def revocation_history(self) -> list[RevocationEvent]:
        return [RevocationEvent(*r) for r in self._all("SELECT * FROM revocation_events ORDER BY seq", ())]  # type: ignore[arg-type]

    # --- the transparency log ------------------------------------------------------------------------------
    def _insert_leaf(self, receipt_id: str, leaf: bytes) -> None:
        # the next index is max + 1: one search at the end of the primary-key b-tree, not a count
        self._db.execute("INSERT INTO merkle_leaves VALUES ((SELECT coalesce(max(leaf_index) + 1, 0) FROM "
                         "merkle_leaves), ?, ?)", (receipt_id, leaf))

    def tree_size(self) -> int:
        row = self._one("SELECT coalesce(max(leaf_index) + 1, 0) FROM merkle_leaves", ())
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def tree_leaves(self, end: int, start: int = 0) -> list[bytes]:
        rows = self._all("SELECT leaf_hash FROM merkle_leaves WHERE leaf_index >= ? AND leaf_index < ? "
                         "ORDER BY leaf_index", (start, end))
        return [bytes(r[0]) for r in rows]  # type: ignore[call-overload]

    def tree_leaf_index(self, receipt_id: str) -> tuple[int, bytes] | None:
        row = self._one("SELECT leaf_index, leaf_hash FROM merkle_leaves WHERE receipt_id=?", (receipt_id,))
        return (int(row[0]), bytes(row[1])) if row else None  # type: ignore[call-overload]

    def tree_head_append(self, head: TreeHead) -> None:
        with self._txn():
            self._db.execute("INSERT INTO tree_heads (tree_size, root_hash, timestamp, key_id, signature) "
                             "VALUES (?,?,?,?,?)", (head.tree_size, head.root_hash, head.timestamp, head.key_id,
                                                    head.signature))

    def tree_heads(self, *, tree_size: int | None = None) -> list[TreeHead]:
        cols = "SELECT tree_size, root_hash, timestamp, key_id, signature FROM tree_heads"
        rows = (self._all(cols + " ORDER BY seq", ()) if tree_size is None
                else self._all(cols + " WHERE tree_size=? ORDER BY seq", (tree_size,)))
        return [TreeHead(*r) for r in rows]  # type: ignore[arg-type]

    def tree_head_latest(self) -> TreeHead | None:
        row = self._one("SELECT tree_size, root_hash, timestamp, key_id, signature FROM tree_heads "
                        "ORDER BY seq DESC LIMIT 1", ())
        return TreeHead(*row) if row else None  # type: ignore[arg-type]

    # --- the telemetry spool ------------------------------------------------------------------------------
    def _insert_telemetry(self, ev: TelemetryEvent) -> None:
        self._db.execute("INSERT OR IGNORE INTO telemetry_spool (event_id, body) VALUES (?, ?)",
                         (ev.event_id, _dumps(ev.to_json())))

    def telemetry_read(self, after: int, limit: int) -> list[TelemetryEvent]:
        rows = self._all("SELECT seq, body FROM telemetry_spool WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        return [TelemetryEvent.from_json(json.loads(str(b)), seq=int(q)) for q, b in rows]  # type: ignore[call-overload]

    def telemetry_cursor(self, sink: str) -> int:
        row = self._one("SELECT seq FROM telemetry_cursors WHERE sink=?", (sink,))
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def telemetry_set_cursor(self, sink: str, seq: int) -> None:
        with self._txn():
            self._db.execute("INSERT INTO telemetry_cursors VALUES (?, ?) ON CONFLICT (sink) DO UPDATE SET "
                             "seq=excluded.seq", (sink, seq))

    def telemetry_trim(self, upto: int) -> int:
        with self._txn():
            return self._db.execute("DELETE FROM telemetry_spool WHERE seq <= ?", (upto,)).rowcount

    def telemetry_span(self) -> tuple[int, int, int]:
        n, low = self._one("SELECT count(*), coalesce(min(seq), 0) FROM telemetry_spool", ()) or (0, 0)
        top = self._one("SELECT seq FROM sqlite_sequence WHERE name='telemetry_spool'", ())
        return int(n), int(low), int(top[0]) if top else 0  # type: ignore[call-overload]

    # --- actions in flight and owners' leases ------------------------------------------------------------
    def _insert_inflight(self, rec: InflightRecord) -> None:
        self._db.execute("INSERT INTO inflight VALUES (?,?,?,?,?)",
                         (rec.session_id, rec.action_id, rec.log_seq, rec.owner, rec.requested_at))

    def _inflight_owner(self, session_id: str, action_id: str) -> str | None:
        row = self._one("SELECT owner FROM inflight WHERE session_id=? AND action_id=?", (session_id, action_id))
        return str(row[0]) if row else None

    def _set_inflight_owner(self, session_id: str, action_id: str, owner: str) -> None:
        self._db.execute("UPDATE inflight SET owner=? WHERE session_id=? AND action_id=?",
                         (owner, session_id, action_id))

    def _delete_inflight(self, session_id: str, action_id: str) -> None:
        self._db.execute("DELETE FROM inflight WHERE session_id=? AND action_id=?", (session_id, action_id))

    def inflight_list(self) -> list[InflightRecord]:
        rows = self._all("SELECT * FROM inflight WHERE owner != ? ORDER BY requested_at, session_id, log_seq",
                         (RECOVERED,))
        return [InflightRecord(str(s), str(a), int(q), str(o), str(t)) for s, a, q, o, t in rows]  # type: ignore[call-overload]

    def owner_renew(self, owner: str, seconds: float) -> None:
        with self._txn():
            self._db.execute("INSERT INTO owners VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET "
                             "lease_until=excluded.lease_until", (owner, lease_text(seconds)))

    def owner_release(self, owner: str) -> None:
        with self._txn():
            self._db.execute("DELETE FROM owners WHERE owner=?", (owner,))

    def owner_leases(self) -> dict[str, str]:
        return {str(o): str(t) for o, t in self._all("SELECT owner, lease_until FROM owners", ())}

    def owners_alive(self) -> set[str]:
        return {o for o, t in self.owner_leases().items() if lease_alive(t)}

    # --- the credential log -----------------------------------------------------------------------------
    def credential_event(self, ev: CredentialEvent) -> None:
        with self._txn():
            self._db.execute(
                "INSERT INTO credential_log (credential_id, event, at, session_id, action_id, tool, kind, scope, "
                "expires_at, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (ev.credential_id, ev.event, ev.at, ev.session_id, ev.action_id, ev.tool, ev.kind,
                 _dumps(list(ev.scope)), ev.expires_at, ev.detail))

    def credential_events(self, *, credential_id: str | None = None, session_id: str | None = None,
                          action_id: str | None = None) -> list[CredentialEvent]:
        where, args = sql_filter("?", credential_id=credential_id, session_id=session_id, action_id=action_id)
        rows = self._all("SELECT credential_id, event, at, session_id, action_id, tool, kind, scope, expires_at, "
                         "detail FROM credential_log" + where + " ORDER BY id", args)
        return [CredentialEvent(str(c), str(e), str(at), str(s), str(a), str(t), str(k), tuple(json.loads(str(sc))),
                                str(x), None if d is None else str(d)) for c, e, at, s, a, t, k, sc, x, d in rows]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
