"""AARM R9 (SHOULD): just-in-time credentials scoped to the operation. "Read op -> issued credential cannot
write", checked against the real PostgreSQL server (127.0.0.1:5432, database `test`)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aarmor import Identity
from aarmor.credentials import current_credential
from tests.conformance.conftest import POLICY, receipts

psycopg = pytest.importorskip("psycopg")

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def table() -> Iterator[tuple[Any, str]]:
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # pragma: no cover (the server runs wherever these tests run)
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    name = f"r9_{secrets.token_hex(4)}_accounts"
    admin.execute(f"CREATE TABLE public.{name} (id serial PRIMARY KEY, owner text, balance int)")
    admin.execute(f"INSERT INTO public.{name} (owner, balance) VALUES ('alice', 100)")
    yield admin, name
    admin.execute(f"DROP TABLE public.{name}")
    admin.close()


def test_read_op_gets_a_credential_that_cannot_write(make_guard: Callable[..., Any],
                                                     table: tuple[Any, str]) -> None:
    admin, name = table
    guard = make_guard(policy=str(POLICY), credentials={"tools": {"accounts_db": {
        "kind": "postgresql", "admin_dsn": ADMIN_DSN, "tables": [f"public.{name}"]}}})
    writes = {
        "INSERT": f"INSERT INTO public.{name} (owner, balance) VALUES ('mallory', 1000000)",
        "UPDATE": f"UPDATE public.{name} SET balance = 0",
        "DELETE": f"DELETE FROM public.{name}",
        "CREATE TABLE": f"CREATE TABLE public.{name}_copy AS SELECT * FROM public.{name}",
        "DROP TABLE": f"DROP TABLE public.{name}",
    }
    outcome: dict[str, Any] = {}

    def read_accounts(args: dict[str, Any]) -> list[Any]:
        cred = current_credential()
        outcome["role"] = cred.role
        with psycopg.connect(cred.dsn, autocommit=True) as conn:
            rows = conn.execute(f"SELECT owner, balance FROM public.{name}").fetchall()
            for what, stmt in writes.items():
                try:
                    conn.execute(stmt)
                    outcome[what] = "succeeded"
                except psycopg.errors.InsufficientPrivilege:
                    outcome[what] = "permission denied"
        return rows

    with guard.session(identity=Identity(human="alice@company.com", agent="report-agent")) as s:
        assert s.invoke("accounts_db", {"query": "balances"}, read_accounts, operation="read") == [("alice", 100)]
    assert {w: outcome[w] for w in writes} == dict.fromkeys(writes, "permission denied")
    assert admin.execute(f"SELECT owner, balance FROM public.{name}").fetchall() == [("alice", 100)]
    # minimal lifetime: the role is gone once the action ended; its use is logged and in the receipt
    assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (outcome["role"],)).fetchone() is None
    [r] = receipts(guard, s.session_id)
    cred = r["execution"]["credential"]
    assert cred["kind"] == "postgresql" and cred["scope"] == ["SELECT"] and cred["role"] == outcome["role"]
    assert [e.event for e in guard.store.credential_events(session_id=s.session_id)] == ["issued", "released"]
