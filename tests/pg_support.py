"""A fresh PostgreSQL database per test on the real server (127.0.0.1:5432, user postgres, trust on loopback
as these machines and .ci/run set it up). Missing server: the test fails, it is never skipped."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with its connections) afterwards."""
    import psycopg

    name = "aarmor_t_" + uuid.uuid4().hex[:16]
    try:
        admin = psycopg.connect(ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable ({exc}); .ci/run starts it")
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def backend(kind: str, path: object) -> Iterator[object]:
    """A store of `kind` (memory, sqlite at `path`, postgresql in a fresh database), closed afterwards."""
    from aarmor.store.memory import MemoryStore
    from aarmor.store.sqlite import SqliteStore

    if kind == "postgresql":
        from aarmor.store.postgres import PostgresStore

        with fresh_database() as url:
            s = PostgresStore(url)
            try:
                yield s
            finally:
                s.close()
        return
    store = MemoryStore() if kind == "memory" else SqliteStore(path)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        store.close()


BACKENDS = ["memory", "sqlite", "postgresql"]
