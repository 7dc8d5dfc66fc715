"""The transparency-log contract of the store, on both backends: one leaf per receipt in commit order, written
in the receipt's transaction (a refused commit adds none), append-only tree heads; the SQLite upgrade from
schema 5 backfills the leaves of the receipts already stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor.errors import ChainError
from aarmor.store import GENESIS, ReceiptRecord, TreeHead
from aarmor.store.base import receipt_leaf
from aarmor.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.pg_support import BACKENDS, backend

T = "2026-11-29T10:00:00.000Z"


@pytest.fixture(params=BACKENDS)
def store(request: Any, tmp_path: Path) -> Iterator[Any]:
    with backend(request.param, tmp_path / "s.db") as s:
        yield s


def rec(session: str, seq: int, prev: str = GENESIS) -> ReceiptRecord:
    h = "sha256:" + f"{session}-{seq}".encode().hex().ljust(64, "0")
    return ReceiptRecord(f"rct_{session}_{seq}", session, seq, "act", T, "tool", "op", "ALLOW", None, None, h,
                         {"prev_receipt_hash": prev})


def chain(session: str, n: int) -> list[ReceiptRecord]:
    out: list[ReceiptRecord] = []
    for i in range(n):
        out.append(rec(session, i, out[-1].receipt_hash if out else GENESIS))
    return out


def test_each_receipt_gets_the_next_leaf_in_commit_order(store: Any) -> None:
    a, b = chain("a", 3), chain("b", 2)
    store.append_all(receipts=(a[0], b[0]))
    store.append_receipt(a[1])
    store.append_all(receipts=(b[1], a[2]))
    order = [a[0], b[0], a[1], b[1], a[2]]
    assert store.tree_size() == 5
    assert store.tree_leaves(5) == [receipt_leaf(r.receipt_hash) for r in order]
    assert store.tree_leaves(4, start=2) == [receipt_leaf(r.receipt_hash) for r in order[2:4]]
    assert store.tree_leaves(99) == store.tree_leaves(5)
    for i, r in enumerate(order):
        assert store.tree_leaf_index(r.receipt_id) == (i, receipt_leaf(r.receipt_hash))
    assert store.tree_leaf_index("rct_none") is None


def test_a_refused_commit_adds_no_leaf(store: Any) -> None:
    a = chain("a", 2)
    store.append_all(receipts=(a[0],))
    with pytest.raises(ChainError):
        store.append_all(receipts=(rec("b", 0), rec("a", 5, "sha256:" + "9" * 64)))
    assert store.tree_size() == 1
    store.append_receipt(a[1])
    assert store.tree_leaf_index(a[1].receipt_id) == (1, receipt_leaf(a[1].receipt_hash))


def test_tree_heads_are_kept_in_publication_order(store: Any) -> None:
    assert store.tree_head_latest() is None and store.tree_heads() == []
    heads = [TreeHead(n, f"{n:064x}", T, "kid", f"sig{n}") for n in (0, 3, 3, 7)]
    for h in heads:
        store.tree_head_append(h)
    assert store.tree_heads() == heads
    assert store.tree_heads(tree_size=3) == heads[1:3]
    assert store.tree_heads(tree_size=4) == []
    assert store.tree_head_latest() == heads[-1]


def test_a_schema_5_store_gains_the_leaves_of_its_receipts(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    a, b = chain("a", 2), chain("b", 1)
    with SqliteStore(path) as s:
        s.append_all(receipts=(b[0], a[0]))
        s.append_receipt(a[1])
    db = sqlite3.connect(path)
    db.execute("DROP TABLE merkle_leaves")
    db.execute("DROP TABLE tree_heads")
    db.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    db.commit()
    db.close()
    with SqliteStore(path) as s:
        # insertion order, not session order
        assert s.tree_leaves(9) == [receipt_leaf(r.receipt_hash) for r in (b[0], a[0], a[1])]
        s.append_receipt(rec("b", 1, b[0].receipt_hash))
        assert s.tree_size() == 4
    with SqliteStore(path) as s:  # opened again: nothing is backfilled twice
        assert s.tree_size() == 4
    assert int(sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]) \
        == SCHEMA_VERSION == 6
