"""The PostgreSQL store's connection pool (store URL option `aarmor_pool`), against the real server.

- One store object commits for several threads at once: a thread holding a session's lock (a connection-level
  advisory lock, held across its whole block) does not stop another thread committing to another session.
- Everything nested in a transaction or a session lock runs on that block's connection (the lock is
  re-entrant there, so the holder's own commits go through).
- With every connection taken, a thread waits for one, at most `aarmor_timeout`, then its operation is
  refused with a clear error; bad option values are refused when the store opens.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from aarmor.errors import StoreError
from aarmor.store import open_store
from aarmor.store.records import GENESIS, LogRecord
from tests.pg_support import fresh_database


@pytest.fixture
def pg() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _entry(session_id: str, seq: int, prev: str) -> LogRecord:
    return LogRecord(session_id, seq, "note", {"n": seq}, "2026-11-29T12:00:00.000000Z", prev,
                     f"sha256:{session_id}-{seq}")


def test_a_held_session_lock_does_not_stop_other_sessions_commits(pg: str) -> None:
    store = open_store(pg + "?aarmor_pool=2")
    try:
        holding, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def hold() -> None:
            try:
                with store.session_lock("s1"):
                    store.append_all(logs=(_entry("s1", 0, GENESIS),))  # the holder's own commit goes through
                    holding.set()
                    release.wait(30)
            except BaseException as exc:  # reported below
                errors.append(exc)
                holding.set()

        t = threading.Thread(target=hold)
        t.start()
        assert holding.wait(30)
        done = threading.Event()

        def other() -> None:
            store.append_all(logs=(_entry("s2", 0, GENESIS),))
            done.set()

        threading.Thread(target=other, daemon=True).start()
        # with one connection shared by every thread this commit would wait for the holder's release
        assert done.wait(30), "a commit to another session waited for an unrelated session lock"
        release.set()
        t.join(30)
        assert not errors
        assert [r.seq for r in store.read_log("s1")] == [0]
        assert [r.seq for r in store.read_log("s2")] == [0]
    finally:
        store.close()


def test_with_every_connection_taken_a_thread_waits_then_is_refused(pg: str) -> None:
    store = open_store(pg + "?aarmor_pool=1&aarmor_timeout=1")
    try:
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with store.session_lock("s1"):
                holding.set()
                release.wait(30)

        t = threading.Thread(target=hold)
        t.start()
        assert holding.wait(30)
        with pytest.raises(StoreError, match=r"no connection free within 1 s \(aarmor_pool=1\)"):
            list(store.read_log("s2"))
        release.set()
        t.join(30)
        assert list(store.read_log("s2")) == []  # the connection is back in the pool
    finally:
        store.close()


@pytest.mark.parametrize("option,message", [
    ("aarmor_pool=0", "aarmor_pool=0 is outside 1-64 connections"),
    ("aarmor_pool=many", "aarmor_pool=`many` is not a whole number"),
    ("aarmor_timeout=soon", "aarmor_timeout=`soon` is not a number of seconds"),
])
def test_bad_pool_options_are_refused_when_the_store_opens(pg: str, option: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(f"{pg}?{option}")
