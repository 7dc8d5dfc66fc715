"""PostgreSQL backend (`store: postgresql://user@host:5432/db`, needs `aarmor[postgresql]`): several processes
and hosts share one store.

- Chains stay linear with writers in many processes: a commit takes a transaction-scoped advisory lock per
  session it appends to (in sorted order, so two commits never wait on each other in a cycle), then reads
  the heads and checks the chain invariant (`Store.append_all`) under that lock.
- Everything else (pending items, tokens, revocations, the credential log, the telemetry spool and cursors)
  is the same contract as SQLite; compare-and-set updates (`pending_update`) rely on PostgreSQL's row locks.
- The schema is created or upgraded on open, under an advisory lock, so several processes starting at once
  do not race. `aarmor_meta.schema_version` is this backend's own version (1 today).
- Durability: a commit that returned is durable with PostgreSQL's default `synchronous_commit = on`.
- A small pool of connections per store object (`aarmor_pool`, default 4); a transaction or a session lock
  keeps its connection for the whole block. Bodies are stored as
  the same compact JSON text SQLite keeps, so hashes recompute identically from either backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from aarmor.errors import StoreError
from aarmor.store.base import PENDING_FIELDS, Head, Store, sql_filter
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

__all__ = ["PG_SCHEMA_VERSION", "PostgresStore"]

log = logging.getLogger("aarmor.store")

PG_SCHEMA_VERSION = 1
_MIGRATION_LOCK = 0x6161726D  # "aarm": one advisory lock id for schema creation and upgrades
#: the transparency log's leaves are one total order over every session's receipts: appending a leaf takes
#: this lock (transaction-scoped), so two commits in different sessions never take the same index
_LEAF_LOCK = 0x6161726E
_dumps = json.JSONEncoder(separators=(",", ":")).encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS aarmor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log_entries (
    session_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    recorded_at TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS receipts (
    rowid BIGSERIAL UNIQUE, receipt_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, seq BIGINT NOT NULL,
    action_id TEXT NOT NULL, timestamp TEXT NOT NULL, tool TEXT NOT NULL, operation TEXT NOT NULL,
    decision TEXT NOT NULL, policy_id TEXT, human TEXT, receipt_hash TEXT NOT NULL, body TEXT NOT NULL,
    UNIQUE (session_id, seq)
);
CREATE INDEX IF NOT EXISTS receipts_ts ON receipts (timestamp);
CREATE INDEX IF NOT EXISTS receipts_human ON receipts (human);
CREATE INDEX IF NOT EXISTS receipts_decision ON receipts (decision);
CREATE INDEX IF NOT EXISTS receipts_action ON receipts (action_id);
CREATE TABLE IF NOT EXISTS pending (
    item_id TEXT PRIMARY KEY, kind TEXT NOT NULL, session_id TEXT NOT NULL, action_id TEXT NOT NULL,
    status TEXT NOT NULL, created_at TEXT NOT NULL, deadline TEXT NOT NULL, owner TEXT NOT NULL,
    lease_until TEXT NOT NULL, body TEXT NOT NULL, outcome TEXT, version BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_status ON pending (kind, status);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL, revoked_by TEXT NOT NULL,
    revoked_at TEXT NOT NULL, until TEXT, PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS revocation_events (
    seq BIGSERIAL PRIMARY KEY, event TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    reason TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL, until TEXT
);
CREATE TABLE IF NOT EXISTS credential_log (
    id BIGSERIAL PRIMARY KEY, credential_id TEXT NOT NULL, event TEXT NOT NULL, at TEXT NOT NULL,
    session_id TEXT NOT NULL, action_id TEXT NOT NULL, tool TEXT NOT NULL, kind TEXT NOT NULL,
    scope TEXT NOT NULL, expires_at TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS credential_log_credential ON credential_log (credential_id);
CREATE INDEX IF NOT EXISTS credential_log_session ON credential_log (session_id);
CREATE TABLE IF NOT EXISTS telemetry_spool (
    seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry_cursors (sink TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS merkle_leaves (
    leaf_index BIGINT PRIMARY KEY, receipt_id TEXT NOT NULL UNIQUE, leaf_hash BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS tree_heads (
    seq BIGSERIAL PRIMARY KEY, tree_size BIGINT NOT NULL, root_hash TEXT NOT NULL, timestamp TEXT NOT NULL,
    key_id TEXT NOT NULL, signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tree_heads_size ON tree_heads (tree_size);
CREATE TABLE IF NOT EXISTS inflight (
    session_id TEXT NOT NULL, action_id TEXT NOT NULL, log_seq BIGINT NOT NULL, owner TEXT NOT NULL,
    requested_at TEXT NOT NULL, PRIMARY KEY (session_id, action_id)
);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, lease_until TEXT NOT NULL);
"""


def _session_lock(session_id: str) -> int:
    """A stable 63-bit advisory lock key for a session (CRC32 of the id, namespaced under "aarm")."""
    return (_MIGRATION_LOCK << 32) | zlib.crc32(session_id.encode("utf-8"))


class _Conn:
    """One pooled connection and what is under way on it (one thread uses it at a time)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        #: transaction nesting depth (0: none open)
        self.in_txn = 0
        #: the writes of the `append_all` under way, sent as one statement before its COMMIT
        self.batch: _Batch | None = None
        #: monotonic start of the operation under way, for the watchdog (None: idle)
        self.busy_since: float | None = None


class PostgresStore(Store):
    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("a postgresql:// store needs psycopg: pip install 'aarmor[postgresql]'") from exc
        self._psycopg = psycopg
        url, self.op_timeout, self.pool_size = _own_options(url)
        #: seconds to (re)connect: bounded by the operation timeout too (libpq counts whole seconds, at least 2)
        self._connect_timeout = int(max(2, min(10, self.op_timeout)))
        self.url = url
        self._safe_url = _without_password(url)
        try:
            first = psycopg.connect(url, autocommit=True, connect_timeout=self._connect_timeout)
            with first.transaction():
                first.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                first.execute(_SCHEMA)
                first.execute("INSERT INTO aarmor_meta VALUES ('schema_version', %s) ON CONFLICT DO NOTHING",
                              (str(PG_SCHEMA_VERSION),))
                row = first.execute("SELECT value FROM aarmor_meta WHERE key='schema_version'").fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL store `{self._safe_url}`: {_why(exc)}") from exc
        if row is None or int(row[0]) != PG_SCHEMA_VERSION:
            first.close()
            raise StoreError(f"store `{self._safe_url}` has schema version {row[0] if row else None}, expected "
                             f"{PG_SCHEMA_VERSION}")
        # The pool: up to `pool_size` connections (URL option `aarmor_pool`, default 4), opened on demand. A
        # thread takes one for an operation, or for a whole transaction or `session_lock` block (bound to the
        # thread, so everything nested in it runs on the same connection), so one Guard's sessions commit in
        # parallel instead of queueing on one connection (BENCHMARKS.md, cluster load).
        self._cond = threading.Condition()
        self._conns: list[_Conn] = [_Conn(first)]
        self._idle: list[_Conn] = [self._conns[0]]
        self._bound = threading.local()
        self._closed = False
        self._stopped = threading.Event()
        # The watchdog: a server that stops answering (paused, a network path that drops packets silently)
        # would make a call wait forever (libpq has no client-side timeout). An operation running longer than
        # `op_timeout` has its socket shut down, so it fails (StoreError: the call is refused) and the next
        # operation on that connection reconnects.
        self._watchdog = threading.Thread(target=self._watch, name="aarmor-pg-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        tick = min(1.0, self.op_timeout / 4)
        while not self._closed:
            try:
                if self._stopped.wait(tick):  # an Event, not time.sleep: woken at close
                    return
                self._check_stuck()
            except Exception:  # the watchdog must outlive anything unexpected: without it a call could hang
                log.exception("PostgreSQL store %s: watchdog tick failed", self._safe_url)

    def _check_stuck(self) -> None:
        with self._cond:
            conns = list(self._conns)
        for c in conns:
            since = c.busy_since
            if since is not None and time.monotonic() - since > self.op_timeout:
                log.error("PostgreSQL store %s: no answer for %.0f s; dropping the connection", self._safe_url,
                          self.op_timeout)
                with contextlib.suppress(OSError, AttributeError, ValueError):
                    sock = socket.socket(fileno=os.dup(c.db.pgconn.socket))
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    finally:
                        sock.close()
                c.busy_since = None

    # --- connections --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _conn(self) -> Iterator[_Conn]:
        """The connection bound to this thread (nested use), or one taken from the pool for the block.

        The operation's clock for the watchdog starts here (outermost use). A connection found broken (the
        server restarted, the backend was terminated, a network cut) is replaced: the operation that broke
        it has failed already (a StoreError: its action was refused); the next one gets a fresh connection,
        so service resumes by itself once the server is back.
        """
        bound: _Conn | None = getattr(self._bound, "conn", None)
        if bound is not None:
            yield bound
            return
        conn = self._take()
        self._bound.conn = conn
        conn.busy_since = time.monotonic()
        try:
            yield conn
        finally:
            conn.busy_since = None
            self._bound.conn = None
            self._give(conn)

    def _take(self) -> _Conn:
        deadline = time.monotonic() + self.op_timeout
        conn: _Conn | None
        with self._cond:
            while True:
                self._check_open()
                if self._idle:
                    conn = self._idle.pop()
                    break
                if len(self._conns) < self.pool_size:
                    conn = None
                    self._conns.append(placeholder := _Conn(None))
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError(f"PostgreSQL store `{self._safe_url}`: no connection free within "
                                     f"{self.op_timeout:g} s (aarmor_pool={self.pool_size})")
                self._cond.wait(left)
        if conn is None:  # a new connection, opened outside the pool's lock
            try:
                placeholder.db = self._connect()
            except BaseException:
                with self._cond:
                    self._conns.remove(placeholder)
                    self._cond.notify()
                raise
            return placeholder
        if conn.db.closed or conn.db.broken:
            try:
                fresh = self._connect()
            except BaseException:
                self._give(conn)
                raise
            with contextlib.suppress(Exception):
                conn.db.close()
            conn.db = fresh
        return conn

    def _give(self, conn: _Conn) -> None:
        with self._cond:
            if self._closed:
                with contextlib.suppress(Exception):
                    conn.db.close()
            else:
                self._idle.append(conn)
            self._cond.notify()

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=self._connect_timeout)
        except self._psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store `{self._safe_url}` unreachable: {_why(exc)}") from exc

    @property
    def _cur(self) -> _Conn:
        """The connection of the transaction under way on this thread (inside `_txn` / `append_all`)."""
        conn: _Conn | None = getattr(self._bound, "conn", None)
        if conn is None:
            raise RuntimeError("no PostgreSQL transaction is open on this thread")
        return conn

    # --- transactions -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _txn(self) -> Iterator[None]:
        with self._conn() as c:
            depth = c.in_txn
            try:
                with c.db.transaction():  # nested: a savepoint inside the outer transaction
                    c.in_txn = depth + 1
                    yield
            except self._psycopg.Error as exc:
                raise StoreError(f"write to `{self._safe_url}` failed: {_why(exc)}") from exc
            finally:
                c.in_txn = depth

    def _lock_sessions(self, session_ids: Sequence[str]) -> None:
        for key in sorted({_session_lock(s) for s in session_ids}):
            self._cur.db.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    @contextlib.contextmanager
    def session_lock(self, session_id: str) -> Iterator[None]:
        """The session's advisory lock at connection level: every other process's append to the session waits
        (ours go through: PostgreSQL advisory locks are re-entrant within a connection)."""
        key = _session_lock(session_id)
        with self._conn() as c:
            try:
                c.db.execute("SELECT pg_advisory_lock(%s)", (key,))
            except self._psycopg.Error as exc:
                raise StoreError(f"cannot lock session `{session_id}` in `{self._safe_url}`: {_why(exc)}") from exc
            try:
                yield
            finally:
                with contextlib.suppress(self._psycopg.Error):
                    c.db.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def append_all(self, logs: tuple[LogRecord, ...] = (), receipts: tuple[ReceiptRecord, ...] = ()) -> None:
        """`Store.append_all` with the sessions it appends to locked first (across processes): BEGIN, the
        sessions' advisory locks, their heads in one query, the in-flight owners it settles (if any) in one
        more, then, every check passed, all the writes as one statement (`_Batch`) and COMMIT: 5 to 7 round
        trips where writing row by row took ~13 (psycopg's pipeline mode, which would send them together,
        cost more client CPU than it saved here: BENCHMARKS.md)."""
        sessions = [r.session_id for r in logs] + [r.session_id for r in receipts]
        with self._conn() as c:
            try:
                with c.db.transaction():
                    c.in_txn, c.batch = 1, _Batch()
                    self._lock_sessions(sessions)
                    self._append_all(logs, receipts)
                    c.batch.flush(c.db)
            except self._psycopg.Error as exc:
                raise StoreError(f"write to `{self._safe_url}` failed: {_why(exc)}") from exc
            finally:
                c.in_txn, c.batch = 0, None

    @property
    def _batching(self) -> _Batch | None:
        conn: _Conn | None = getattr(self._bound, "conn", None)
        return None if conn is None else conn.batch

    _HEADS = ("SELECT k.s, l.seq, l.entry_hash, r.seq, r.receipt_hash FROM unnest(%s::text[]) AS k(s) "
              "LEFT JOIN LATERAL (SELECT seq, entry_hash FROM log_entries WHERE session_id = k.s "
              "ORDER BY seq DESC LIMIT 1) l ON true "
              "LEFT JOIN LATERAL (SELECT seq, receipt_hash FROM receipts WHERE session_id = k.s "
              "ORDER BY seq DESC LIMIT 1) r ON true")

    def _read_heads(self, session_ids: Sequence[str]) -> dict[str, tuple[Head, Head]]:
        return {str(sid): (None if ls is None else (int(ls), str(lh)), None if rs is None else (int(rs), str(rh)))
                for sid, ls, lh, rs, rh in self._x(self._HEADS, (list(session_ids),)).fetchall()}

    def _inflight_owners(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys:
            return {}
        # the rows locked (FOR UPDATE): a recovery's claim and this process's own outcome serialise, one of
        # them sees the other's change, instead of both reading the old owner under READ COMMITTED
        rows = self._x("SELECT i.session_id, i.action_id, i.owner FROM inflight i "
                       "JOIN unnest(%s::text[], %s::text[]) AS k(s, a) ON i.session_id = k.s AND i.action_id = k.a "
                       "FOR UPDATE OF i", ([s for s, _ in keys], [a for _, a in keys])).fetchall()
        return {(str(s), str(a)): str(o) for s, a, o in rows}

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store already closed")

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> Any:
        with self._conn() as c:
            try:
                return c.db.execute(sql, args).fetchone()
            except self._psycopg.Error as exc:
                raise StoreError(f"read from `{self._safe_url}` failed: {_why(exc)}") from exc

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        with self._conn() as c:
            try:
                return list(c.db.execute(sql, args).fetchall())
            except self._psycopg.Error as exc:
                raise StoreError(f"read from `{self._safe_url}` failed: {_why(exc)}") from exc

    def _x(self, sql: str, args: tuple[object, ...] | dict[str, object] = ()) -> Any:
        """Execute inside the current transaction (the caller holds `_txn`)."""
        return self._cur.db.execute(sql, args)

    # --- chains -------------------------------------------------------------------------------------------
    def _log_head(self, session_id: str) -> tuple[int, str] | None:
        row = self._one("SELECT seq, entry_hash FROM log_entries WHERE session_id=%s ORDER BY seq DESC LIMIT 1",
                        (session_id,))
        return (int(row[0]), str(row[1])) if row else None

    def _insert_log(self, rec: LogRecord) -> None:
        if self._batching is not None:
            self._batching.logs.append((rec.session_id, rec.seq, rec.kind, _dumps(rec.body), rec.recorded_at,
                                     rec.prev_hash, rec.entry_hash))
            return
        self._x("INSERT INTO log_entries VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (rec.session_id, rec.seq, rec.kind, _dumps(rec.body), rec.recorded_at, rec.prev_hash,
                 rec.entry_hash))

    def _receipt_head(self, session_id: str) -> tuple[int, str] | None:
        row = self._one("SELECT seq, receipt_hash FROM receipts WHERE session_id=%s ORDER BY seq DESC LIMIT 1",
                        (session_id,))
        return (int(row[0]), str(row[1])) if row else None

    def _insert_receipt(self, r: ReceiptRecord) -> None:
        if self._batching is not None:
            self._batching.receipts.append((r.receipt_id, r.session_id, r.seq, r.action_id, r.timestamp, r.tool,
                                         r.operation, r.decision, r.policy_id, r.human, r.receipt_hash,
                                         _dumps(r.body)))
            return
        self._x("INSERT INTO receipts (receipt_id, session_id, seq, action_id, timestamp, tool, operation, "
                "decision, policy_id, human, receipt_hash, body) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (r.receipt_id, r.session_id, r.seq, r.action_id, r.timestamp, r.tool, r.operation, r.decision,
                 r.policy_id, r.human, r.receipt_hash, _dumps(r.body)))

    def read_log(self, session_id: str, after: int | None = None) -> Iterator[LogRecord]:
        # no `after`: every stored row, whatever its seq (Store.read_log)
        rows = self._all("SELECT session_id, seq, kind, body, recorded_at, prev_hash, entry_hash FROM log_entries "
                         "WHERE session_id=%s AND (%s::bigint IS NULL OR seq>%s) ORDER BY seq",
                         (session_id, after, after))
        for s, seq, kind, body, at, prev, h in rows:
            yield LogRecord(s, int(seq), kind, json.loads(body), at, prev, h)

    def log_sessions(self) -> list[str]:
        rows = self._all("SELECT session_id FROM log_entries WHERE seq=0 ORDER BY recorded_at, session_id")
        return [str(r[0]) for r in rows]

    _RECEIPT_COLS = ("receipt_id, session_id, seq, action_id, timestamp, tool, operation, decision, policy_id, "
                     "human, receipt_hash, body")

    @staticmethod
    def _receipt(row: Any) -> ReceiptRecord:
        rid, sid, seq, aid, ts, tool, op, dec, pid, human, h, body = row
        return ReceiptRecord(rid, sid, int(seq), aid, ts, tool, op, dec, pid, human, h, json.loads(body))

    def get_receipt(self, receipt_id: str) -> ReceiptRecord | None:
        row = self._one(f"SELECT {self._RECEIPT_COLS} FROM receipts WHERE receipt_id=%s", (receipt_id,))
        return self._receipt(row) if row else None

    def read_receipts(self, session_id: str | None = None) -> Iterator[ReceiptRecord]:
        if session_id is None:
            rows = self._all(f"SELECT {self._RECEIPT_COLS} FROM receipts ORDER BY session_id, seq")
        else:
            rows = self._all(f"SELECT {self._RECEIPT_COLS} FROM receipts WHERE session_id=%s ORDER BY seq",
                             (session_id,))
        for row in rows:
            yield self._receipt(row)

    # --- pending approvals and deferrals ------------------------------------------------------------
    @staticmethod
    def _pending(row: Any) -> PendingRecord:
        iid, kind, sid, aid, status, created, deadline, owner, lease, body, outcome, version = row
        return PendingRecord(iid, kind, sid, aid, status, created, deadline, owner, lease, json.loads(body),
                             None if outcome is None else json.loads(outcome), int(version))

    def pending_put(self, rec: PendingRecord) -> None:
        try:
            with self._txn():
                self._x("INSERT INTO pending VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,0)",
                        (rec.item_id, rec.kind, rec.session_id, rec.action_id, rec.status, rec.created_at,
                         rec.deadline, rec.owner, rec.lease_until, _dumps(rec.body),
                         None if rec.outcome is None else _dumps(rec.outcome)))
        except StoreError as exc:
            if isinstance(exc.__cause__, self._psycopg.errors.UniqueViolation):
                raise StoreError(f"pending item `{rec.item_id}` already stored") from exc
            raise

    def pending_get(self, item_id: str) -> PendingRecord | None:
        row = self._one("SELECT * FROM pending WHERE item_id=%s", (item_id,))
        return self._pending(row) if row else None

    def pending_list(self, *, kind: str | None = None, status: str | None = None,
                     session_id: str | None = None) -> list[PendingRecord]:
        where, args = sql_filter("%s", kind=kind, status=status, session_id=session_id)
        return [self._pending(r) for r in self._all("SELECT * FROM pending" + where + " ORDER BY created_at, item_id",
                                                    args)]

    def pending_update(self, item_id: str, expect_version: int, **changes: Any) -> PendingRecord | None:
        if not set(changes) <= PENDING_FIELDS:
            raise ValueError(f"cannot change {sorted(set(changes) - PENDING_FIELDS)} of a pending item")
        cols = sorted(changes)
        vals = [(_dumps(changes[c]) if changes[c] is not None else None) if c in ("body", "outcome")
                else changes[c] for c in cols]
        with self._txn():
            row = self._x("UPDATE pending SET " + "".join(f"{c}=%s, " for c in cols) + "version=version+1 "
                          "WHERE item_id=%s AND version=%s RETURNING *", (*vals, item_id, expect_version)).fetchone()
        return self._pending(row) if row else None

    # --- API tokens -----------------------------------------------------------------------------------
    def token_put(self, tok: ApiToken) -> None:
        try:
            with self._txn():
                self._x("INSERT INTO api_tokens VALUES (%s,%s,%s,%s,%s,%s)",
                        (tok.token_id, tok.digest, tok.name, tok.role, tok.created_at, tok.revoked_at))
        except StoreError as exc:
            if isinstance(exc.__cause__, self._psycopg.errors.UniqueViolation):
                raise StoreError(f"token `{tok.token_id}` already stored") from exc
            raise

    def token_by_digest(self, digest: str) -> ApiToken | None:
        row = self._one("SELECT * FROM api_tokens WHERE digest=%s", (digest,))
        return ApiToken(*row) if row else None

    def token_list(self) -> list[ApiToken]:
        return [ApiToken(*r) for r in self._all("SELECT * FROM api_tokens ORDER BY created_at, token_id")]

    def token_revoke(self, token_id: str, at: str) -> bool:
        with self._txn():
            cur = self._x("UPDATE api_tokens SET revoked_at=%s WHERE token_id=%s AND revoked_at IS NULL",
                          (at, token_id))
            return bool(cur.rowcount == 1)

    # --- identity revocations -----------------------------------------------------------------------
    def revocation_put(self, rev: Revocation) -> tuple[Revocation, bool]:
        with self._txn():
            self._x("SELECT pg_advisory_xact_lock(%s)", (_session_lock(f"revocation|{rev.kind}|{rev.value}"),))
            row = self._x("SELECT * FROM revocations WHERE kind=%s AND value=%s AND (until IS NULL OR until > %s)",
                          (rev.kind, rev.value, rev.revoked_at)).fetchone()
            if row is not None:
                return Revocation(*row), False
            self._x("INSERT INTO revocations VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (kind, value) DO UPDATE SET "
                    "reason=excluded.reason, revoked_by=excluded.revoked_by, revoked_at=excluded.revoked_at, "
                    "until=excluded.until",
                    (rev.kind, rev.value, rev.reason, rev.revoked_by, rev.revoked_at, rev.until))
            self._revocation_event("revoke", rev.kind, rev.value, rev.reason, rev.revoked_by, rev.revoked_at,
                                   rev.until)
        return rev, True

    def revocation_delete(self, kind: str, value: str, *, actor: str, at: str, reason: str) -> Revocation | None:
        with self._txn():
            row = self._x("DELETE FROM revocations WHERE kind=%s AND value=%s RETURNING *", (kind, value)).fetchone()
            if row is None:
                return None
            self._revocation_event("unrevoke", kind, value, reason, actor, at, None)
        return Revocation(*row)

    def _revocation_event(self, event: str, kind: str, value: str, reason: str, actor: str, at: str,
                          until: str | None) -> None:
        self._x("INSERT INTO revocation_events (event, kind, value, reason, actor, at, until) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s)", (event, kind, value, reason, actor, at, until))

    def revocation_list(self, *, now: str | None = None) -> list[Revocation]:
        if now is None:
            rows = self._all("SELECT * FROM revocations ORDER BY revoked_at, kind, value")
        else:
            rows = self._all("SELECT * FROM revocations WHERE until IS NULL OR until > %s "
                             "ORDER BY revoked_at, kind, value", (now,))
        return [Revocation(*r) for r in rows]

    def revocation_find(self, keys: Sequence[tuple[str, str]], *, now: str) -> Revocation | None:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return None
        # one primary-key probe per key: (kind, value) = ANY of the pairs
        rows = self._all("SELECT r.* FROM revocations r JOIN unnest(%s::text[], %s::text[]) AS k(kind, value) "
                         "ON r.kind = k.kind AND r.value = k.value WHERE r.until IS NULL OR r.until > %s",
                         ([k for k, _ in unique], [v for _, v in unique], now))
        if not rows:
            return None
        return min((Revocation(*r) for r in rows), key=lambda r: (r.revoked_at, r.kind, r.value))

    def revocation_history(self) -> list[RevocationEvent]:
        return [RevocationEvent(*r) for r in self._all("SELECT * FROM revocation_events ORDER BY seq")]

    # --- the transparency log (aarmor.receipts.transparency) ---------------------------------------------
    def _insert_leaf(self, receipt_id: str, leaf: bytes) -> None:
        if self._batching is not None:
            self._batching.leaves.append((receipt_id, leaf))
            return
        self._x("SELECT pg_advisory_xact_lock(%s)", (_LEAF_LOCK,))
        self._x("INSERT INTO merkle_leaves VALUES ((SELECT coalesce(max(leaf_index) + 1, 0) FROM merkle_leaves), "
                "%s, %s)", (receipt_id, leaf))

    def tree_size(self) -> int:
        row = self._one("SELECT coalesce(max(leaf_index) + 1, 0) FROM merkle_leaves")
        return int(row[0]) if row else 0

    def tree_leaves(self, end: int, start: int = 0) -> list[bytes]:
        rows = self._all("SELECT leaf_hash FROM merkle_leaves WHERE leaf_index >= %s AND leaf_index < %s "
                         "ORDER BY leaf_index", (start, end))
        return [bytes(r[0]) for r in rows]

    def tree_leaf_index(self, receipt_id: str) -> tuple[int, bytes] | None:
        row = self._one("SELECT leaf_index, leaf_hash FROM merkle_leaves WHERE receipt_id=%s", (receipt_id,))
        return (int(row[0]), bytes(row[1])) if row else None

    def tree_head_append(self, head: TreeHead) -> None:
        with self._txn():
            self._x("INSERT INTO tree_heads (tree_size, root_hash, timestamp, key_id, signature) "
                    "VALUES (%s,%s,%s,%s,%s)", (head.tree_size, head.root_hash, head.timestamp, head.key_id,
                                                head.signature))

    def tree_heads(self, *, tree_size: int | None = None) -> list[TreeHead]:
        cols = "SELECT tree_size, root_hash, timestamp, key_id, signature FROM tree_heads"
        rows = (self._all(cols + " ORDER BY seq") if tree_size is None
                else self._all(cols + " WHERE tree_size=%s ORDER BY seq", (tree_size,)))
        return [TreeHead(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def tree_head_latest(self) -> TreeHead | None:
        row = self._one("SELECT tree_size, root_hash, timestamp, key_id, signature FROM tree_heads "
                        "ORDER BY seq DESC LIMIT 1")
        return TreeHead(int(row[0]), row[1], row[2], row[3], row[4]) if row else None

    # --- actions in flight and their owners' leases (crash recovery, docs/durability.md) ----------------
    def _insert_inflight(self, rec: InflightRecord) -> None:
        if self._batching is not None:
            self._batching.started.append((rec.session_id, rec.action_id, rec.log_seq, rec.owner, rec.requested_at))
            return
        self._x("INSERT INTO inflight VALUES (%s,%s,%s,%s,%s)",
                (rec.session_id, rec.action_id, rec.log_seq, rec.owner, rec.requested_at))

    def _inflight_owner(self, session_id: str, action_id: str) -> str | None:
        # inside a write: lock the row, so a recovery's claim and this process's own outcome serialise (one
        # of them sees the other's change) instead of both reading the old owner under READ COMMITTED
        conn = getattr(self._bound, "conn", None)
        lock = " FOR UPDATE" if conn is not None and conn.in_txn else ""
        row = self._one("SELECT owner FROM inflight WHERE session_id=%s AND action_id=%s" + lock,
                        (session_id, action_id))
        return str(row[0]) if row else None

    def _set_inflight_owner(self, session_id: str, action_id: str, owner: str) -> None:
        if self._batching is not None and owner == RECOVERED:
            self._batching.recovered.append((session_id, action_id))
            return
        self._x("UPDATE inflight SET owner=%s WHERE session_id=%s AND action_id=%s", (owner, session_id, action_id))

    def _delete_inflight(self, session_id: str, action_id: str) -> None:
        if self._batching is not None:
            self._batching.ended.append((session_id, action_id))
            return
        self._x("DELETE FROM inflight WHERE session_id=%s AND action_id=%s", (session_id, action_id))

    def inflight_list(self) -> list[InflightRecord]:
        rows = self._all("SELECT * FROM inflight WHERE owner != %s ORDER BY requested_at, session_id, log_seq",
                         (RECOVERED,))
        return [InflightRecord(s, a, int(q), o, t) for s, a, q, o, t in rows]

    # Leases are written and judged by the server's clock (`clock_timestamp()`), never a client's: clients
    # on several hosts, or one whose wall clock steps, agree on who is alive (docs/durability.md "Clock
    # jumps"). The text has `format_ts`'s shape, so leases written by older clients compare the same way.
    def owner_renew(self, owner: str, seconds: float) -> None:
        with self._txn():
            self._x("INSERT INTO owners VALUES (%s, " + _server_ts("clock_timestamp() + make_interval(secs => %s)") +
                    ") ON CONFLICT (owner) DO UPDATE SET lease_until=excluded.lease_until", (owner, float(seconds)))

    def owner_release(self, owner: str) -> None:
        with self._txn():
            self._x("DELETE FROM owners WHERE owner=%s", (owner,))

    def owner_leases(self) -> dict[str, str]:
        return {str(o): str(t) for o, t in self._all("SELECT owner, lease_until FROM owners")}

    def owners_alive(self) -> set[str]:
        return {str(r[0]) for r in self._all("SELECT owner FROM owners WHERE lease_until > " +
                                             _server_ts("clock_timestamp()"))}

    # --- the telemetry spool ------------------------------------------------------------------------------
    def _insert_telemetry(self, ev: TelemetryEvent) -> None:
        if self._batching is not None:
            self._batching.telemetry.append((ev.event_id, _dumps(ev.to_json())))
            return
        self._x("INSERT INTO telemetry_spool (event_id, body) VALUES (%s, %s) ON CONFLICT (event_id) DO NOTHING",
                (ev.event_id, _dumps(ev.to_json())))

    def telemetry_read(self, after: int, limit: int) -> list[TelemetryEvent]:
        rows = self._all("SELECT seq, body FROM telemetry_spool WHERE seq > %s ORDER BY seq LIMIT %s", (after, limit))
        return [TelemetryEvent.from_json(json.loads(b), seq=int(q)) for q, b in rows]

    def telemetry_cursor(self, sink: str) -> int:
        row = self._one("SELECT seq FROM telemetry_cursors WHERE sink=%s", (sink,))
        return int(row[0]) if row else 0

    def telemetry_set_cursor(self, sink: str, seq: int) -> None:
        with self._txn():
            self._x("INSERT INTO telemetry_cursors VALUES (%s, %s) ON CONFLICT (sink) DO UPDATE SET seq=excluded.seq",
                    (sink, seq))

    def telemetry_trim(self, upto: int) -> int:
        with self._txn():
            return int(self._x("DELETE FROM telemetry_spool WHERE seq <= %s", (upto,)).rowcount)

    def telemetry_span(self) -> tuple[int, int, int]:
        n, low = self._one("SELECT count(*), coalesce(min(seq), 0) FROM telemetry_spool")
        top = self._one("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM telemetry_spool_seq_seq")
        return int(n), int(low), int(top[0]) if top else 0

    # --- the credential log -----------------------------------------------------------------------------
    def credential_event(self, ev: CredentialEvent) -> None:
        with self._txn():
            self._x("INSERT INTO credential_log (credential_id, event, at, session_id, action_id, tool, kind, scope, "
                    "expires_at, detail) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (ev.credential_id, ev.event, ev.at, ev.session_id, ev.action_id, ev.tool, ev.kind,
                     _dumps(list(ev.scope)), ev.expires_at, ev.detail))

    def credential_events(self, *, credential_id: str | None = None, session_id: str | None = None,
                          action_id: str | None = None) -> list[CredentialEvent]:
        where, args = sql_filter("%s", credential_id=credential_id, session_id=session_id, action_id=action_id)
        rows = self._all("SELECT credential_id, event, at, session_id, action_id, tool, kind, scope, expires_at, "
                         "detail FROM credential_log" + where + " ORDER BY id", args)
        return [CredentialEvent(c, e, at, s, a, t, k, tuple(json.loads(sc)), x, d)
                for c, e, at, s, a, t, k, sc, x, d in rows]

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopped.set()
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for c in idle:  # connections in use are closed when given back
            with contextlib.suppress(Exception):
                c.db.close()


class _Batch:
    """The writes of one `append_all`, sent as a single statement (data-modifying CTEs over `unnest` arrays):
    one statement's client and server work instead of one per row and table.

    INVARIANT: flushed inside the commit's transaction, after the transparency-log lock was taken (a
    separate statement before it: the leaf indexes are read from the snapshot of the batch statement, which
    starts after the lock is held, so two commits never compute the same index).
    """

    def __init__(self) -> None:
        self.logs: list[tuple[Any, ...]] = []
        self.receipts: list[tuple[Any, ...]] = []
        self.leaves: list[tuple[str, bytes]] = []
        self.started: list[tuple[Any, ...]] = []
        self.ended: list[tuple[str, str]] = []
        self.recovered: list[tuple[str, str]] = []
        self.telemetry: list[tuple[str, str]] = []

    # each part reads its rows from one JSON parameter holding every part's rows as arrays (the client
    # encodes it with the C json encoder: binding arrays or rows through the driver cost more client CPU
    # than the round trips this batch saves)
    _PARTS = (
        ("logs", "INSERT INTO log_entries SELECT r->>0, (r->>1)::bigint, r->>2, r->>3, r->>4, r->>5, r->>6 "
                 "FROM json_array_elements(%(b)s::json->'logs') r"),
        ("receipts", "INSERT INTO receipts (receipt_id, session_id, seq, action_id, timestamp, tool, operation, "
                     "decision, policy_id, human, receipt_hash, body) SELECT r->>0, r->>1, (r->>2)::bigint, r->>3, "
                     "r->>4, r->>5, r->>6, r->>7, r->>8, r->>9, r->>10, r->>11 "
                     "FROM json_array_elements(%(b)s::json->'receipts') r"),
        ("leaves", "INSERT INTO merkle_leaves SELECT (SELECT coalesce(max(leaf_index) + 1, 0) FROM merkle_leaves) "
                   "+ x.n - 1, x.r->>0, decode(x.r->>1, 'hex') "
                   "FROM json_array_elements(%(b)s::json->'leaves') WITH ORDINALITY AS x(r, n)"),
        ("started", "INSERT INTO inflight SELECT r->>0, r->>1, (r->>2)::bigint, r->>3, r->>4 "
                    "FROM json_array_elements(%(b)s::json->'started') r"),
        ("ended", "DELETE FROM inflight i USING json_array_elements(%(b)s::json->'ended') r "
                  "WHERE i.session_id = r->>0 AND i.action_id = r->>1"),
        ("recovered", f"UPDATE inflight i SET owner = '{RECOVERED}' "
                      "FROM json_array_elements(%(b)s::json->'recovered') r "
                      "WHERE i.session_id = r->>0 AND i.action_id = r->>1"),
        ("telemetry", "INSERT INTO telemetry_spool (event_id, body) SELECT r->>0, r->>1 "
                      "FROM json_array_elements(%(b)s::json->'telemetry') WITH ORDINALITY AS x(r, n) ORDER BY x.n "
                      "ON CONFLICT (event_id) DO NOTHING"),
    )

    def flush(self, db: Any) -> None:
        parts, rows = [], {}
        for name, sql in self._PARTS:
            if getattr(self, name):
                parts.append(f"{name} AS ({sql})")
                rows[name] = getattr(self, name)
        if not parts:
            return
        if self.leaves:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_LEAF_LOCK,))
            rows["leaves"] = [(r, leaf.hex()) for r, leaf in self.leaves]
        db.execute("WITH " + ", ".join(parts) + " SELECT 1", {"b": _dumps(rows)})


def _own_options(url: str) -> tuple[str, float, int]:
    """Take aarmor's own URL options off before libpq sees them: `aarmor_timeout` (seconds an operation may
    take before the watchdog drops its connection, or wait for a free one; default 30) and `aarmor_pool`
    (connections one store object may open; default 4)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    mine = {k: v for k, v in query if k in ("aarmor_timeout", "aarmor_pool")}  # the last one given wins
    timeout = _option(mine, "aarmor_timeout", float, 30.0, (0.5, 3600), "a number of seconds", "seconds")
    pool = _option(mine, "aarmor_pool", int, 4, (1, 64), "a whole number of connections", "connections")
    rest = urlencode([(k, v) for k, v in query if k not in mine])
    return urlunsplit(parts._replace(query=rest)), timeout, int(pool)


def _option(given: dict[str, str], key: str, kind: type[float] | type[int], default: float,
            bounds: tuple[float, float], what: str, unit: str) -> float:
    """One of aarmor's store URL options: `default` when absent, else `kind(value)` within `bounds`."""
    if key not in given:
        return default
    try:
        value = kind(given[key])
    except ValueError:
        raise StoreError(f"store URL option {key}=`{given[key]}` is not {what}") from None
    if not bounds[0] <= value <= bounds[1]:
        raise StoreError(f"store URL option {key}={value:g} is outside {bounds[0]:g}-{bounds[1]:g} {unit}")
    return value


def _without_password(url: str) -> str:
    """The URL as it may appear in messages: a password never does."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _why(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _server_ts(expr: str) -> str:
    """SQL giving the timestamp `expr` as text in `format_ts`'s shape (UTC, milliseconds, `Z`)."""
    return f"to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
