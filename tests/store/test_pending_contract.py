"""The pending-item and token contract, on every backend: compare-and-set with exactly one winner."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor.errors import StoreError
from aarmor.store import ApiToken, PendingRecord, Store
from aarmor.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.pg_support import BACKENDS, backend


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with backend(request.param, tmp_path / "p.db") as s:
        yield s


def _item(item_id: str = "apr_1", *, kind: str = "approval", session: str = "s1",
          created: str = "2026-01-01T00:00:00.000Z") -> PendingRecord:
    return PendingRecord(item_id, kind, session, "act_1", "pending", created, "2026-01-01T01:00:00.000Z",
                         "host:1:abc", "2026-01-01T00:00:10.000Z", {"tool": "payments", "n": [1, 2]})


def test_put_get_list_filters(store: Store) -> None:
    store.pending_put(_item("apr_1"))
    store.pending_put(_item("dfr_1", kind="deferral", session="s2", created="2026-01-01T00:00:01.000Z"))
    got = store.pending_get("apr_1")
    assert got is not None and got.body == {"tool": "payments", "n": [1, 2]} and got.version == 0
    assert store.pending_get("nope") is None
    assert [r.item_id for r in store.pending_list()] == ["apr_1", "dfr_1"]
    assert [r.item_id for r in store.pending_list(kind="deferral")] == ["dfr_1"]
    assert [r.item_id for r in store.pending_list(session_id="s1", status="pending")] == ["apr_1"]
    assert store.pending_list(status="approved") == []


def test_duplicate_id_is_refused(store: Store) -> None:
    store.pending_put(_item())
    with pytest.raises(StoreError, match="already stored"):
        store.pending_put(_item())


def test_update_is_compare_and_set(store: Store) -> None:
    store.pending_put(_item())
    new = store.pending_update("apr_1", 0, status="approved", outcome={"approver": "carol"})
    assert new is not None and new.version == 1 and new.status == "approved"
    assert new.outcome == {"approver": "carol"}
    assert store.pending_update("apr_1", 0, status="denied") is None  # stale version loses
    assert store.pending_get("apr_1").status == "approved"  # type: ignore[union-attr]
    assert store.pending_update("missing", 0, status="denied") is None
    with pytest.raises(ValueError, match="kind"):
        store.pending_update("apr_1", 1, kind="deferral")


def test_returned_records_are_copies(store: Store) -> None:
    store.pending_put(_item())
    got = store.pending_get("apr_1")
    assert got is not None
    got.body["tool"] = "changed"
    assert store.pending_get("apr_1").body["tool"] == "payments"  # type: ignore[union-attr]


def test_concurrent_updates_exactly_one_wins(store: Store) -> None:
    store.pending_put(_item())
    barrier = threading.Barrier(8)
    wins: list[int] = []

    def decide(i: int) -> None:
        barrier.wait()
        if store.pending_update("apr_1", 0, status="approved", outcome={"by": i}) is not None:
            wins.append(i)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.pending_get("apr_1").outcome == {"by": wins[0]}  # type: ignore[union-attr]


def _decide_in_process(path: str, i: int, start: multiprocessing.synchronize.Event,  # type: ignore[name-defined]
                       out: multiprocessing.queues.Queue[int]) -> None:  # type: ignore[name-defined]
    s = SqliteStore(path)
    start.wait()
    if s.pending_update("apr_1", 0, status="approved", outcome={"by": i}) is not None:
        out.put(i)
    s.close()


def test_concurrent_processes_exactly_one_wins(tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    SqliteStore(path).pending_put(_item())
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_decide_in_process, args=(path, i, start, out)) for i in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    winners = []
    while not out.empty():
        winners.append(out.get())
    assert len(winners) == 1
    assert SqliteStore(path).pending_get("apr_1").outcome == {"by": winners[0]}  # type: ignore[union-attr]


def test_tokens(store: Store) -> None:
    tok = ApiToken("tok_1", "sha256:aa", "carol@company.com", "approver", "2026-01-01T00:00:00.000Z")
    store.token_put(tok)
    assert store.token_by_digest("sha256:aa") == tok
    assert store.token_by_digest("sha256:bb") is None
    with pytest.raises(StoreError):
        store.token_put(tok)
    assert store.token_revoke("tok_1", "2026-01-02T00:00:00.000Z")
    assert not store.token_revoke("tok_1", "2026-01-03T00:00:00.000Z")  # already revoked
    assert store.token_by_digest("sha256:aa").revoked_at == "2026-01-02T00:00:00.000Z"  # type: ignore[union-attr]
    assert [t.token_id for t in store.token_list()] == ["tok_1"]


def test_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE pending")
    db.execute("DROP TABLE api_tokens")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    s = SqliteStore(path)
    s.pending_put(_item())
    assert s.pending_get("apr_1") is not None
    s.close()
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION


def test_unknown_future_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)
