"""The SQLite store's head memo never lets a stale chain head through.

`SqliteStore` remembers chain heads between its own write transactions (to skip the head reads). These
tests fork and tamper with the chain behind its back -- another connection, another store object, a
write on its own connection, a failed transaction -- and check that the append is refused exactly as
the reference rule (`Store._check_link` on a head read from disk) refuses it, with nothing written.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from aarmor.errors import ChainError
from aarmor.store.base import _check_link
from aarmor.store.memory import MemoryStore
from aarmor.store.records import GENESIS, LogRecord, ReceiptRecord
from aarmor.store.sqlite import SqliteStore


def _log(session: str, seq: int, prev: str) -> LogRecord:
    return LogRecord(session, seq, "event", {"n": seq}, "2026-01-01T00:00:00.000Z", prev, f"sha256:{session}-{seq}")


def _receipt(session: str, seq: int, prev: str) -> ReceiptRecord:
    return ReceiptRecord(f"rct_{session}_{seq}", session, seq, f"act_{seq}", "2026-01-01T00:00:00.000Z", "t", "",
                         "ALLOW", "p", "alice", f"sha256:r-{session}-{seq}", {"prev_receipt_hash": prev, "seq": seq})


def test_fork_by_another_connection_is_refused(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "x.db"), SqliteStore(tmp_path / "x.db")
    a.append_log(_log("s", 0, GENESIS))
    a.append_log(_log("s", 1, "sha256:s-0"))           # a now remembers head (1, s-1)
    b.append_log(_log("s", 2, "sha256:s-1"))           # b extends the chain behind a's back
    with pytest.raises(ChainError, match="expected seq 3"):
        a.append_log(_log("s", 2, "sha256:s-1"))       # a's remembered head is stale: refused
    a.append_log(_log("s", 3, "sha256:s-2"))           # and a follows the real head afterwards
    assert [r.seq for r in a.read_log("s")] == [0, 1, 2, 3]


def test_deletion_by_a_raw_connection_is_seen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    for i in range(3):
        store.append_log(_log("s", i, GENESIS if i == 0 else f"sha256:s-{i - 1}"))
    raw = sqlite3.connect(tmp_path / "x.db")
    raw.execute("DELETE FROM log_entries WHERE seq=2")
    raw.commit()
    with pytest.raises(ChainError, match="expected seq 2"):
        store.append_log(_log("s", 3, "sha256:s-2"))
    assert [r.seq for r in store.read_log("s")] == [0, 1]


def test_write_on_the_store_own_connection_is_seen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    store.append_log(_log("s", 0, GENESIS))
    store.append_log(_log("s", 1, "sha256:s-0"))
    store._db.execute("DELETE FROM log_entries WHERE seq=1")  # outside the Store API, same connection
    with pytest.raises(ChainError, match="expected seq 1"):
        store.append_log(_log("s", 2, "sha256:s-1"))


def test_failed_transaction_leaves_no_remembered_head(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    store.append_log(_log("s", 0, GENESIS))
    with pytest.raises(ChainError):  # the log entry is fine, the receipt is not: nothing is written
        store.append_all(logs=(_log("s", 1, "sha256:s-0"),), receipts=(_receipt("s", 5, GENESIS),))
    assert [r.seq for r in store.read_log("s")] == [0]
    with pytest.raises(ChainError, match="expected seq 1"):
        store.append_log(_log("s", 2, "sha256:s-1"))  # the rolled-back seq 1 is not the head
    store.append_log(_log("s", 1, "sha256:s-0"))


def test_random_interleavings_match_the_reference_rule(tmp_path: Path) -> None:
    """Differential: two SQLite connections plus an in-memory reference, random (often stale) appends."""
    rnd = random.Random(7)
    stores = [SqliteStore(tmp_path / "x.db"), SqliteStore(tmp_path / "x.db")]
    ref = MemoryStore()
    for _ in range(300):
        session = rnd.choice(["s", "t"])
        head = ref.log_head(session)
        seq = (head[0] + 1 if head else 0) + rnd.choice([0, 0, 0, -1, 1])
        prev = rnd.choice([head[1] if head else GENESIS, GENESIS, f"sha256:{session}-{max(seq - 2, 0)}"])
        rec = _log(session, max(seq, 0), prev)
        store = rnd.choice(stores)
        try:
            _check_link(ref.log_head(session), rec.seq, rec.prev_hash, session, "log")
            expect_ok = True
        except ChainError:
            expect_ok = False
        if expect_ok:
            store.append_log(rec)
            ref.append_log(rec)
        else:
            with pytest.raises(ChainError):
                store.append_log(rec)
        for s in ("s", "t"):
            assert stores[0].log_head(s) == stores[1].log_head(s) == ref.log_head(s)


def test_stored_body_text_is_unchanged(tmp_path: Path) -> None:
    """The reused encoder writes exactly the text `json.dumps(body, separators=(",", ":"))` wrote."""
    import json

    store = SqliteStore(tmp_path / "x.db")
    rec = LogRecord("s", 0, "event", {"z": "é\u2028", "a": [1, 2.5, None, True], "m": {"k": "v"}},
                    "2026-01-01T00:00:00.000Z", GENESIS, "sha256:s-0")
    store.append_log(rec)
    raw = sqlite3.connect(tmp_path / "x.db").execute("SELECT body FROM log_entries").fetchone()[0]
    assert raw == json.dumps(rec.body, separators=(",", ":"))
