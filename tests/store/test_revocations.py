"""The identity-revocation contract of the store, on every backend: idempotent revoke, lookup by any of several
keys with `until`, unrevoke, the append-only history; the SQLite schema upgrade and the indexed lookup."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor.store import Revocation, Store
from aarmor.store.sqlite import SCHEMA_VERSION, SqliteStore, find_revocation_sql
from tests.pg_support import BACKENDS, backend

T0, T1, T2, T3 = (f"2026-01-01T0{h}:00:00.000Z" for h in range(4))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with backend(request.param, tmp_path / "r.db") as s:
        yield s


def _rev(kind: str = "agent", value: str = "bot", *, at: str = T0, until: str | None = None,
         reason: str = "compromised") -> Revocation:
    return Revocation(kind, value, reason, "secops", at, until)


def test_revoke_is_idempotent_and_the_first_revocation_stays(store: Store) -> None:
    first = _rev()
    assert store.revocation_put(first) == (first, True)
    kept, created = store.revocation_put(_rev(at=T1, reason="again"))
    assert kept == first and created is False
    assert store.revocation_list() == [first]
    assert [e.event for e in store.revocation_history()] == ["revoke"]


def test_an_ended_revocation_is_replaced_by_a_new_one(store: Store) -> None:
    store.revocation_put(_rev(until=T1))
    again = _rev(at=T2, reason="back again")
    assert store.revocation_put(again) == (again, True)
    assert store.revocation_list() == [again]
    assert [(e.event, e.reason) for e in store.revocation_history()] == [("revoke", "compromised"),
                                                                         ("revoke", "back again")]


def test_find_looks_up_several_keys_and_honours_until(store: Store) -> None:
    store.revocation_put(_rev("token", "jti-1", at=T1))
    store.revocation_put(_rev("agent", "bot", at=T0, until=T2))
    keys = [("token", "jti-1"), ("subject", "alice"), ("agent", "bot")]
    found = store.revocation_find(keys, now=T1)
    assert found is not None and (found.kind, found.value) == ("agent", "bot")  # the earliest of the two
    found = store.revocation_find(keys, now=T2)  # `until` reached: the agent revocation no longer applies
    assert found is not None and (found.kind, found.value) == ("token", "jti-1")
    assert store.revocation_find([("subject", "alice"), ("agent", "jti-1")], now=T1) is None  # kinds are separate
    assert store.revocation_find([], now=T1) is None
    assert [r.value for r in store.revocation_list(now=T3)] == ["jti-1"]
    assert [r.value for r in store.revocation_list()] == ["bot", "jti-1"]


def test_find_with_many_keys(store: Store) -> None:
    store.revocation_put(_rev("token", "jti-250"))
    keys = [("token", f"jti-{i}") for i in range(300)]
    found = store.revocation_find(keys, now=T1)
    assert found is not None and found.value == "jti-250"


def test_unrevoke_removes_it_and_is_recorded(store: Store) -> None:
    store.revocation_put(_rev())
    lifted = store.revocation_delete("agent", "bot", actor="lead", at=T1, reason="false alarm")
    assert lifted == _rev()
    assert store.revocation_delete("agent", "bot", actor="lead", at=T1, reason="again") is None
    assert store.revocation_find([("agent", "bot")], now=T2) is None
    events = store.revocation_history()
    assert [(e.seq, e.event, e.actor, e.at, e.reason) for e in events] == [
        (1, "revoke", "secops", T0, "compromised"), (2, "unrevoke", "lead", T1, "false alarm")]


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_older_stores_are_upgraded_in_place(tmp_path: Path, version: int) -> None:
    """2 lacks the revocation tables, 3 the credential log, 4 the telemetry spool, 5 the transparency log and
    the crash-recovery tables: each gains what it lacks."""
    from aarmor.store import CredentialEvent

    path = tmp_path / f"v{version}.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    if version == 2:
        db.execute("DROP TABLE revocations")
        db.execute("DROP TABLE revocation_events")
    if version <= 3:
        db.execute("DROP TABLE credential_log")
    if version <= 4:
        db.execute("DROP TABLE telemetry_spool")
        db.execute("DROP TABLE telemetry_cursors")
    db.execute("DROP TABLE merkle_leaves")
    db.execute("DROP TABLE tree_heads")
    db.execute("DROP TABLE inflight")
    db.execute("DROP TABLE owners")
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
    db.commit()
    db.close()
    with SqliteStore(path) as s:
        s.revocation_put(_rev())
        assert s.revocation_find([("agent", "bot")], now=T1) is not None
        ev = CredentialEvent("crd_1", "issued", T1, "sess_1", "act_1", "db.query", "postgresql", ("SELECT",), T1)
        s.credential_event(ev)
        assert s.credential_events(credential_id="crd_1") == [ev]
        from aarmor.telemetry.events import system_event

        s.telemetry_append([system_event("policy.loaded", time=T1, severity="info", source="t")])
        assert [e.type for e in s.telemetry_read(0, 10)] == ["policy.loaded"]
        s.telemetry_set_cursor("sink", 1)
        assert s.telemetry_cursor("sink") == 1
        assert s.tree_size() == 0 and s.tree_heads() == []
    version_now = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version_now) == SCHEMA_VERSION == 6


def test_the_lookup_searches_the_primary_key_and_never_scans(tmp_path: Path) -> None:
    """What runs on every decision: one primary-key search per key, whatever the table holds."""
    with SqliteStore(tmp_path / "plan.db") as s:
        for i in range(200):
            s.revocation_put(_rev("token", f"jti-{i}"))
        keys = [("token", "a"), ("subject", "b"), ("agent", "c")]
        args = (*(x for k in keys for x in k), T0)
        plan = s._db.execute("EXPLAIN QUERY PLAN " + find_revocation_sql(len(keys)), args).fetchall()
    details = [row[3] for row in plan]
    assert details.count("SEARCH revocations USING PRIMARY KEY (kind=? AND value=?)") == 3, details
    assert not any(d.startswith("SCAN revocations") for d in details), details
