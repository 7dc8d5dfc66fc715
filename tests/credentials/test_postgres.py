"""PostgreSQL credentials against the real server: a temporary role per action, holding only what the
operation needs, expiring, and dropped after the action (AARM R9)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import errors

from aarmor import ActionDenied, Identity
from aarmor.credentials import Credential, current_credential
from tests.credentials.conftest import ADMIN_DSN, jit_roles

ALICE = Identity(human="alice@company.com", agent="orders-agent")


def _attempts(dsn: str, orders: str) -> dict[str, str]:
    """Try each kind of statement with the credential; `ok` or the SQLSTATE class name of the failure."""
    statements = {
        "select": f"SELECT count(*) FROM public.{orders}",
        "insert": f"INSERT INTO public.{orders} (item, qty) VALUES ('pear', 1)",
        "update": f"UPDATE public.{orders} SET qty = 9",
        "delete": f"DELETE FROM public.{orders}",
        "create": f"CREATE TABLE public.{orders}_evil (x int)",
        "drop": f"DROP TABLE public.{orders}",
        "truncate": f"TRUNCATE public.{orders}",
    }
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, stmt in statements.items():
            try:
                conn.execute(stmt)
                out[name] = "ok"
            except psycopg.Error as exc:
                out[name] = type(exc).__name__
    return out


def test_read_credential_can_select_and_nothing_else(pg_guard: Callable[..., Any], orders: str, admin: Any) -> None:
    guard = pg_guard()
    seen: list[tuple[Credential, dict[str, str], str]] = []

    def query(args: dict[str, Any]) -> int:
        cred = current_credential()
        with psycopg.connect(cred.dsn) as conn:
            user = conn.execute("SELECT current_user").fetchone()[0]
        seen.append((cred, _attempts(cred.dsn, orders), user))
        return 1

    with guard.session(identity=ALICE) as s:
        s.invoke("orders_db", {"sql": "select"}, query, operation="read")
    [(cred, results, user)] = seen
    assert results == {"select": "ok", "insert": "InsufficientPrivilege", "update": "InsufficientPrivilege",
                       "delete": "InsufficientPrivilege", "create": "InsufficientPrivilege",
                       "drop": "InsufficientPrivilege", "truncate": "InsufficientPrivilege"}
    assert user == cred.role and cred.role.startswith("aarmor_jit_")
    assert cred.kind == "postgresql" and cred.scope == ("SELECT",)
    # the table is untouched and the role is gone once the action ended
    assert admin.execute(f"SELECT item, qty FROM public.{orders}").fetchall() == [("apple", 3)]
    assert cred.role not in jit_roles(admin)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cred.dsn, connect_timeout=5).close()
    # the receipt references the credential, never its secret
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    block = r["execution"]["credential"]
    assert block["credential_id"] == cred.credential_id and block["role"] == cred.role
    assert block["scope"] == ["SELECT"] and block["released_at"] is not None and "release_error" not in block
    password = psycopg.conninfo.conninfo_to_dict(cred.dsn)["password"]
    assert password not in json.dumps(r) and password not in repr(cred)
    events = guard.store.credential_events(credential_id=cred.credential_id)
    assert [e.event for e in events] == ["issued", "released"]
    assert events[1].detail == "tool succeeded" and password not in repr(events)


def test_insert_credential_inserts_but_cannot_delete_or_change_the_schema(
        pg_guard: Callable[..., Any], orders: str, admin: Any) -> None:
    guard = pg_guard()
    seen: list[dict[str, str]] = []
    with guard.session(identity=ALICE) as s:
        s.invoke("orders_db", {"sql": "insert"}, lambda a: seen.append(_attempts(current_credential().dsn, orders)),
                 operation="insert")
    [results] = seen
    # INSERT works (USAGE on the serial column's sequence came with it); nothing else does, not even SELECT
    assert results["insert"] == "ok"
    assert {k: v for k, v in results.items() if k != "insert"} == dict.fromkeys(
        ("select", "update", "delete", "create", "drop", "truncate"), "InsufficientPrivilege")
    assert admin.execute(f"SELECT item FROM public.{orders} ORDER BY id").fetchall() == [("apple",), ("pear",)]


def test_an_expired_credential_cannot_connect(pg_guard: Callable[..., Any], orders: str, admin: Any) -> None:
    guard = pg_guard(ttl=1)
    outcome: dict[str, Any] = {}

    def slow_tool(args: dict[str, Any]) -> None:
        cred = current_credential()
        with psycopg.connect(cred.dsn) as conn:  # valid now
            outcome["before"] = conn.execute("SELECT count(*) FROM public." + orders).fetchone()[0]
        valid_until = admin.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (cred.role,)).fetchone()[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the server's clock past VALID UNTIL, and the broker's expiry done
            past, can_login = admin.execute("SELECT now() > %s, rolcanlogin FROM pg_roles WHERE rolname = %s",
                                            (valid_until, cred.role)).fetchone()
            if past and not can_login:
                break
            time.sleep(0.05)
        try:
            psycopg.connect(cred.dsn, connect_timeout=5).close()
            outcome["after"] = "connected"
        except psycopg.OperationalError as exc:
            outcome["after"] = str(exc)
        outcome["cred"] = cred

    with guard.session(identity=ALICE) as s:
        s.invoke("orders_db", {}, slow_tool, operation="read")
    assert outcome["before"] == 1
    assert "not permitted to log in" in outcome["after"]
    cred = outcome["cred"]
    assert [e.event for e in guard.store.credential_events(credential_id=cred.credential_id)] == [
        "issued", "expired", "released"]
    assert cred.role not in jit_roles(admin)


def test_postgresql_unreachable_means_deny_and_not_executed(pg_guard: Callable[..., Any]) -> None:
    guard = pg_guard(admin_dsn="postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
    ran: list[int] = []
    with guard.session(identity=ALICE) as s:
        with pytest.raises(ActionDenied) as denied:
            s.invoke("orders_db", {}, lambda a: ran.append(1), operation="read")
    assert ran == []
    assert "cannot connect to PostgreSQL" in denied.value.decision.reason
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    assert r["enforcement"]["executed"] is False and r["execution"] is None
    assert r["error"]["class"] == "CredentialError" and "port 1" in r["error"]["message"]
    assert guard.store.credential_events(session_id=s.session_id) == []


def test_an_operation_without_privileges_gets_no_credential_and_is_denied(
        pg_guard: Callable[..., Any], admin: Any) -> None:
    guard = pg_guard()
    ran: list[int] = []
    before = jit_roles(admin)
    with guard.session(identity=ALICE) as s:
        with pytest.raises(ActionDenied) as denied:
            s.invoke("orders_db", {}, lambda a: ran.append(1), operation="truncate")
    assert ran == [] and jit_roles(admin) == before
    assert "no credential for operation `truncate` of `orders_db`" in denied.value.decision.reason


def test_privileges_granted_to_public_refuse_the_credential(
        pg_guard: Callable[..., Any], orders: str, admin: Any) -> None:
    admin.execute(f"GRANT INSERT ON public.{orders} TO PUBLIC")  # every role, the JIT one too, could write
    guard = pg_guard()
    ran: list[int] = []
    before = jit_roles(admin)
    with guard.session(identity=ALICE) as s:
        with pytest.raises(ActionDenied) as denied:
            s.invoke("orders_db", {}, lambda a: ran.append(1), operation="read")
    assert ran == [] and jit_roles(admin) == before  # the role was created in a transaction rolled back
    assert f"would also hold INSERT on public.{orders}" in denied.value.decision.reason


def test_unknown_table_is_denied(pg_guard: Callable[..., Any], orders: str) -> None:
    guard = pg_guard(tables=[f"public.{orders}_missing"])
    with guard.session(identity=ALICE) as s:
        with pytest.raises(ActionDenied) as denied:
            s.invoke("orders_db", {}, lambda a: 1, operation="read")
    assert f"`public.{orders}_missing` does not exist" in denied.value.decision.reason


def test_a_failed_release_is_recorded_and_the_role_cannot_log_in(
        pg_guard: Callable[..., Any], admin: Any) -> None:
    """The role holds a grant in another database (DROP OWNED reaches only the broker's): DROP ROLE fails."""
    guard = pg_guard()
    other = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    table = f"jit_{secrets.token_hex(4)}_elsewhere"
    other.execute(f"CREATE TABLE public.{table} (x int)")
    roles: list[str] = []

    def tool(args: dict[str, Any]) -> None:
        role = current_credential().role
        assert role is not None
        roles.append(role)
        other.execute(f'GRANT SELECT ON public.{table} TO "{role}"')

    try:
        with guard.session(identity=ALICE) as s:
            s.invoke("orders_db", {}, tool, operation="read")
        [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
        block = r["execution"]["credential"]
        assert block["released_at"] is None and "cannot be dropped" in block["release_error"]
        [role] = roles
        assert admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (False,)
        events = guard.store.credential_events(session_id=s.session_id)
        assert [e.event for e in events] == ["issued", "release_failed"]
    finally:
        other.execute(f"DROP TABLE public.{table}")
        other.close()
        for role in roles:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_sweep_drops_expired_roles_left_behind(pg_guard: Callable[..., Any], admin: Any, orders: str) -> None:
    crashed = f"aarmor_jit_{secrets.token_hex(8)}"
    alive = f"aarmor_jit_{secrets.token_hex(8)}"
    admin.execute(f"CREATE ROLE {crashed} LOGIN VALID UNTIL '2020-01-01T00:00:00Z'")
    admin.execute(f"GRANT SELECT ON public.{orders} TO {crashed}")
    admin.execute(f"CREATE ROLE {alive} LOGIN VALID UNTIL '{datetime.now(UTC).year + 1}-01-01T00:00:00Z'")
    try:
        guard = pg_guard()
        with guard.session(identity=ALICE) as s:  # the broker's first connection sweeps
            s.invoke("orders_db", {}, lambda a: 1, operation="read")
        roles = jit_roles(admin)
        assert crashed not in roles and alive in roles
    finally:
        admin.execute(f"DROP ROLE IF EXISTS {crashed}")
        admin.execute(f"DROP ROLE IF EXISTS {alive}")


def test_async_tool_gets_its_credential(pg_guard: Callable[..., Any], orders: str) -> None:
    guard = pg_guard()

    async def query(args: dict[str, Any]) -> int:
        cred = current_credential()
        async with await psycopg.AsyncConnection.connect(cred.dsn) as conn:
            cur = await conn.execute(f"SELECT qty FROM public.{orders}")
            row = await cur.fetchone()
            try:
                await conn.execute(f"DELETE FROM public.{orders}")
            except errors.InsufficientPrivilege:
                return int(row[0])
        raise AssertionError("a read credential deleted rows")

    async def main() -> str:
        async with guard.session(identity=ALICE) as s:
            assert await s.ainvoke("orders_db", {}, query, operation="read") == 3
        return s.session_id

    session_id = asyncio.run(main())
    assert [e.event for e in guard.store.credential_events(session_id=session_id)] == ["issued", "released"]


def test_the_broker_refuses_to_start_a_credential_without_the_connection_string_secret_in_errors(
        pg_guard: Callable[..., Any]) -> None:
    """A wrong admin password: the error names the server, never the password in the DSN."""
    guard = pg_guard(admin_dsn="postgresql://nobody_here:s3cr3t-pw@127.0.0.1:5432/test")
    with guard.session(identity=ALICE) as s:
        with pytest.raises(ActionDenied) as denied:
            s.invoke("orders_db", {}, lambda a: 1, operation="read")
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    assert "s3cr3t-pw" not in json.dumps(r) and "s3cr3t-pw" not in denied.value.decision.reason
    assert "cannot connect to PostgreSQL" in denied.value.decision.reason
    assert ADMIN_DSN not in repr(guard.config.credentials)


def test_a_schema_anyone_may_create_in_refuses_the_credential(make_guard: Callable[..., Any], admin: Any,
                                                              no_leaked_roles: None) -> None:
    """CREATE on the tables' schema (granted to PUBLIC) would let a read credential run DDL: refused."""
    from tests.credentials.conftest import POLICY

    schema = f"jit_{secrets.token_hex(4)}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        admin.execute(f"CREATE TABLE {schema}.items (x int)")
        admin.execute(f"GRANT CREATE ON SCHEMA {schema} TO PUBLIC")
        guard = make_guard(POLICY, credentials={"tools": {"orders_db": {
            "kind": "postgresql", "admin_dsn": ADMIN_DSN, "tables": [f"{schema}.items"]}}})
        with guard.session(identity=ALICE) as s:
            with pytest.raises(ActionDenied) as denied:
                s.invoke("orders_db", {}, lambda a: 1, operation="read")
        assert f"would also hold CREATE on schema {schema}" in denied.value.decision.reason
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
