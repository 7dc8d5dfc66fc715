"""Fixtures for the credential broker tests: a real PostgreSQL server (127.0.0.1:5432, database `test`),
scratch tables with unique names, and a check that no temporary role outlives its test."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.server.conftest import serve  # noqa: F401 (a real `aarmor serve`, for the HTTP door's test)

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: `policy_text` for guards in these tests: everything allowed, one MODIFY to check argument binding
POLICY = """
policy: {id: jit, version: "1", default: ALLOW}
rules:
  - id: cap-limit
    match: {tool: payments, operation: read, parameters: {limit: {gt: 100}}}
    action: MODIFY
    modifications: {parameters: {limit: 100}}
    reason: at most 100 rows
  - id: big-payments
    match: {tool: payments, operation: write, parameters: {amount: {gt: 1000}}}
    action: STEP_UP
    approvers: [carol@company.com]
    timeout: 10
    reason: big payments need carol
"""


@pytest.fixture
def admin() -> Iterator[Any]:
    """An autocommit superuser connection to the test database (the broker's admin DSN)."""
    import psycopg

    try:
        conn = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # a missing server is a failure, never a skip: .ci/run starts one
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable ({exc}); these tests need the real "
                    "server: start it (.ci/run does)")
    yield conn
    conn.close()


def jit_roles(admin: Any) -> set[str]:
    return {r for (r,) in admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'aarmor\\_jit\\_%'")}


@pytest.fixture
def no_leaked_roles(admin: Any) -> Iterator[None]:
    """Every temporary role created during the test is gone at its end."""
    before = jit_roles(admin)
    yield
    leaked = jit_roles(admin) - before
    for role in leaked:  # clean up before failing, so one failure does not cascade
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')
    assert not leaked, f"temporary roles left behind: {sorted(leaked)}"


@pytest.fixture
def orders(admin: Any, no_leaked_roles: None) -> Iterator[str]:
    """A scratch table `public.jit_<hex>_orders` (serial id, item, qty) with one row; dropped afterwards."""
    name = f"jit_{secrets.token_hex(4)}_orders"
    admin.execute(f"CREATE TABLE public.{name} (id serial PRIMARY KEY, item text NOT NULL, qty int NOT NULL)")
    admin.execute(f"INSERT INTO public.{name} (item, qty) VALUES ('apple', 3)")
    yield name
    admin.execute(f"DROP TABLE IF EXISTS public.{name} CASCADE")


@pytest.fixture
def pg_guard(make_guard: Callable[..., Any], orders: str) -> Callable[..., Any]:
    """A Guard whose tool `orders_db` gets PostgreSQL credentials on the scratch table."""

    def open_(**tool: Any) -> Any:
        cfg = {"kind": "postgresql", "admin_dsn": ADMIN_DSN, "tables": [f"public.{orders}"],
               "privileges": {"read": ["SELECT"], "insert": ["INSERT"],
                              "write": ["SELECT", "INSERT", "UPDATE", "DELETE"]}} | tool
        ttl = cfg.pop("broker_ttl", 60)
        return make_guard(POLICY, credentials={"ttl": ttl, "tools": {"orders_db": cfg}})

    return open_
