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


class PrivateCluster:
    """A PostgreSQL server of our own (initdb on a free port, trust on loopback), which a test may stop and
    start again: faults the shared server on 127.0.0.1:5432 must not suffer."""

    def __init__(self) -> None:
        import glob
        import os
        import shutil
        import subprocess
        import tempfile
        from pathlib import Path

        from tests.mcp_support import free_port

        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not dirs:
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package "
                        "(.ci/run does)")
        self.bindir = Path(dirs[-1])
        self.base = Path(tempfile.mkdtemp(prefix="aarmor-pg-"))
        # initdb refuses to run as root: as root, run the server as the `postgres` system user
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.base, "postgres")
            self.base.chmod(0o755)
        self.data, self.port = self.base / "data", free_port()
        self._run = subprocess.run
        self._run([*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                   "postgres"], check=True, capture_output=True)
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        self._run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", *args], check=True,
                  capture_output=True)

    def start(self) -> None:
        self._ctl("-l", str(self.base / "log"), "-o",
                  f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def close(self) -> None:
        import shutil

        self._run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                   "stop"], check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def pids(self) -> list[int]:
        """The server's processes: the postmaster and its children (backends and helpers)."""
        from pathlib import Path

        main = int((self.data / "postmaster.pid").read_text().split()[0])
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and
                    _ppid(p) == main]
        return [main, *children]


def _ppid(proc: object) -> int | None:
    try:
        stat = (proc / "stat").read_text()  # type: ignore[operator]
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
