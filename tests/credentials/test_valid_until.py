"""VALID UNTIL alone, as after a broker crash: on a server that asks for passwords (a private PostgreSQL
cluster with scram-sha-256, started for this module), a role left behind cannot log in once its VALID UNTIL
has passed, and the sweep drops it. (The shared test server trusts 127.0.0.1, where PostgreSQL does not check
VALID UNTIL: there the broker's own NOLOGIN at expiry does it, see test_postgres.py.)"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from aarmor.config import PostgresToolConfig
from aarmor.credentials.model import IssueRequest
from aarmor.credentials.postgres import PostgresRoleIssuer
from aarmor.model import FrozenMap, Identity
from aarmor.normalize import normalize_action
from tests.mcp_support import free_port


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and Path(out, "initdb").exists():
            return Path(out)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "initdb").exists() else None


@pytest.fixture(scope="module")
def scram_dsn() -> Iterator[str]:
    """A private cluster on a free port that authenticates every login with a SCRAM password."""
    bindir = _bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package "
                    "(.ci/run does)")
    # not under pytest's tmp directory: it is private to this user, and the server may run as another
    base = Path(tempfile.mkdtemp(prefix="aarmor-scram-pg-"))
    # initdb refuses to run as root: as root, run the server as the `postgres` system user
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    (base / "pw").write_text("admin-pw\n")
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(base / "pw", "postgres")
        base.chmod(0o755)
    data, port = base / "data", free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "admin",
                    f"--pwfile={base / 'pw'}"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://admin:admin-pw@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_role_left_behind_cannot_log_in_after_valid_until_and_is_swept(scram_dsn: str) -> None:
    with psycopg.connect(scram_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS public.items (x int)")
        issuer = PostgresRoleIssuer("items_db", PostgresToolConfig(admin_dsn=scram_dsn, tables=("public.items",)))
        action = normalize_action("items_db", {}, operation="read", identity=Identity(human="a@company.com"),
                                  session_id="sess_t", now=datetime.now(UTC))
        # the issuer alone: no broker, so nothing switches the role off at expiry (as after a crash)
        cred = issuer.issue(IssueRequest("cred_" + uuid.uuid4().hex, action, FrozenMap(), ("SELECT",), 1.0,
                                         datetime.now(UTC)))
        with psycopg.connect(cred.dsn) as conn:  # the password works while VALID UNTIL is ahead
            assert conn.execute("SELECT count(*) FROM public.items").fetchone() == (0,)
        with pytest.raises(psycopg.OperationalError) as wrong:  # and only the password
            psycopg.connect(cred.dsn.replace("password=", "password=x"), connect_timeout=5).close()
        assert "password authentication failed" in str(wrong.value)
        deadline = time.monotonic() + 30
        while not admin.execute("SELECT now() > rolvaliduntil FROM pg_roles WHERE rolname = %s",
                                (cred.role,)).fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (cred.role,)).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError) as expired:
            psycopg.connect(cred.dsn, connect_timeout=5).close()
        assert "password authentication failed" in str(expired.value)
        assert issuer.sweep() == [cred.role]
        assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (cred.role,)).fetchone() is None
        issuer.close()
