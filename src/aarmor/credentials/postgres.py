"""PostgreSQL credentials: a temporary login role per action, holding only what the operation needs.

Issuing (one transaction on the broker's admin connection, so a failure leaves nothing behind):
1. `CREATE ROLE aarmor_jit_<16 hex> LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION
   NOBYPASSRLS PASSWORD '<SCRAM verifier>' VALID UNTIL '<server clock + ttl>'`. The password is random
   and hashed client side (libpq's `PQencryptPasswordConn`), so the clear password never reaches the
   server's statement log; the expiry comes from the server's clock, the one that enforces it.
2. `GRANT CONNECT` on the database, `USAGE` on the tables' schemas, the operation's privileges on the
   configured tables (nothing else), and `USAGE` on the sequences those tables own when INSERT is granted.
3. A check of what the role can really do: a privilege the operation does not need (given to PUBLIC, say),
   or CREATE on a schema or the database, refuses the credential (`excess_privilege`): a read credential
   that could write is not issued.
Identifiers and literals are composed with `psycopg.sql`, never formatted into SQL text.

The tool gets a connection string for the role (the admin DSN's host, port and options, with the role's
user and password). Releasing (after the action, whether it succeeded or not): `ALTER ROLE ... NOLOGIN`,
terminate the role's sessions, `DROP OWNED BY` (its grants and anything it created), `DROP ROLE`.

Expiry: `VALID UNTIL` stops password logins once passed, but only where `pg_hba.conf` asks for a password
(`trust` skips the check). So the broker also expires the role itself: at `expires_at` a role not yet
released gets `NOLOGIN` (new connections refused under any authentication method; open ones stay until
release terminates them). Roles a crashed broker left behind are dropped by `sweep` (expired `aarmor_jit_%`
roles), which runs on the broker's first connection.
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aarmor.config import PostgresToolConfig
from aarmor.credentials.model import Credential, CredentialError, IssueRequest, operation_scope

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

__all__ = ["ROLE_PREFIX", "PostgresRoleIssuer"]

log = logging.getLogger("aarmor.credentials")

ROLE_PREFIX = "aarmor_jit_"
#: every table privilege PostgreSQL knows: what the role holds is checked against all of them
_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
#: privileges that can also be granted per column (`has_any_column_privilege` sees both kinds)
_COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
#: milliseconds to wait for a terminated session to end
_TERMINATE_WAIT_MS = 5000


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the extra is not installed: no credential, so the action is DENY
        raise CredentialError("postgresql_unavailable", "PostgreSQL credentials need psycopg: "
                              "pip install 'aarmor[postgresql]'") from exc
    return psycopg


class PostgresRoleIssuer:
    """Creates, expires and drops temporary roles for one configured database tool."""

    kind = "postgresql"
    #: every step is a round trip to the database: async callers run it in a worker thread
    blocking = True

    def __init__(self, tool: str, config: PostgresToolConfig) -> None:
        self.tool = tool
        self._cfg = config
        self._lock = threading.Lock()  # one admin connection, used by one statement sequence at a time
        self._conn: psycopg.Connection[Any] | None = None
        self._swept = False

    # --- scope ------------------------------------------------------------------------------------
    def scope(self, operation: str) -> tuple[str, ...]:
        """The table privileges of `operation`.

        Raises:
            CredentialError: `operation_not_configured` (fail closed: no privileges, no credential).
        """
        return operation_scope(self.tool, "privileges", self._cfg.privileges, operation)

    # --- the admin connection -----------------------------------------------------------------------
    def _admin(self) -> psycopg.Connection[Any]:
        """The broker's connection (reopened if it broke); sweeps leftover roles on the first one.

        Raises:
            CredentialError: `postgresql_unavailable`.
        """
        psycopg = _psycopg()
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        try:
            self._conn = psycopg.connect(self._cfg.admin_dsn, autocommit=True,
                                         connect_timeout=max(1, round(self._cfg.connect_timeout)),
                                         application_name="aarmor-credential-broker")
        except psycopg.Error as exc:
            # libpq's message names host and port, never the password
            raise CredentialError("postgresql_unavailable", f"cannot connect to PostgreSQL for `{self.tool}` "
                                  f"credentials: {_first_line(exc)}") from exc
        if not self._swept:
            self._swept = True
            try:
                self._sweep(self._conn)
            except psycopg.Error as exc:  # leftovers still expire (VALID UNTIL); issuing may go on
                log.warning("could not sweep expired %s roles for `%s`: %s", ROLE_PREFIX, self.tool, _first_line(exc))
        return self._conn

    def sweep(self) -> list[str]:
        """Drop every `aarmor_jit_` role whose VALID UNTIL has passed (left by a crash). Returns their names."""
        with self._lock:
            return self._sweep(self._admin())

    def _sweep(self, conn: psycopg.Connection[Any]) -> list[str]:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s AND rolvaliduntil < now()",
                            (ROLE_PREFIX.replace("_", r"\_") + "%",)).fetchall()
        dropped = []
        for (role,) in rows:
            try:
                self._drop(conn, role)
                dropped.append(role)
            except CredentialError as exc:
                log.warning("could not drop expired role %s: %s", role, exc)
        if dropped:
            log.info("dropped %d expired credential role(s) left behind: %s", len(dropped), ", ".join(dropped))
        return dropped

    # --- issue ------------------------------------------------------------------------------------
    def issue(self, req: IssueRequest) -> Credential:
        """Create the role for one action (see the module doc).

        Raises:
            CredentialError: `postgresql_unavailable`, `unknown_table`, `grant_failed`, `excess_privilege`.
        """
        psycopg = _psycopg()
        from psycopg import sql

        role = ROLE_PREFIX + secrets.token_hex(8)
        password = secrets.token_urlsafe(32)
        with self._lock:
            conn = self._admin()
            try:
                with conn.transaction():
                    row = conn.execute("SELECT clock_timestamp(), current_database()").fetchone()
                    assert row is not None
                    server_now, database = row
                    valid_until = server_now + timedelta(seconds=req.ttl)
                    tables = self._tables(conn)
                    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
                    conn.execute(sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION "
                        "NOBYPASSRLS PASSWORD {} VALID UNTIL {}").format(
                        sql.Identifier(role), sql.Literal(verifier.decode("ascii")),
                        sql.Literal(valid_until.isoformat())))
                    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(database), sql.Identifier(role)))
                    for schema in dict.fromkeys(s for _, s, _ in tables):
                        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                            sql.Identifier(schema), sql.Identifier(role)))
                    conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(p) for p in req.scope),  # from PG_PRIVILEGES only (config)
                        sql.SQL(", ").join(sql.Identifier(s, t) for _, s, t in tables), sql.Identifier(role)))
                    if "INSERT" in req.scope:
                        for seq_schema, seq in self._owned_sequences(conn, [oid for oid, _, _ in tables]):
                            conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                                sql.Identifier(seq_schema, seq), sql.Identifier(role)))
                    self._check_least_privilege(conn, role, database, tables, req.scope)
            except CredentialError:
                raise
            except psycopg.OperationalError as exc:
                raise CredentialError("postgresql_unavailable", f"PostgreSQL failed while issuing a credential "
                                      f"for `{self.tool}`: {_first_line(exc)}") from exc
            except psycopg.Error as exc:
                raise CredentialError("grant_failed", f"could not create the credential role for `{self.tool}`: "
                                      f"{_first_line(exc)}") from exc
        dsn = _role_dsn(psycopg, self._cfg.admin_dsn, role, password, database)
        return Credential(
            credential_id=req.credential_id, kind="postgresql", tool=self.tool, action_id=req.action.action_id,
            session_id=req.action.session_id, operation=req.action.operation, scope=req.scope,
            issued_at=server_now, expires_at=valid_until, role=role, _secret=dsn)

    def _tables(self, conn: psycopg.Connection[Any]) -> list[tuple[int, str, str]]:
        """(oid, schema, name) of each configured table; names are exact (case-sensitive), as quoted.

        Raises:
            CredentialError: `unknown_table`.
        """
        found = []
        for qualified in self._cfg.tables:
            schema, name = qualified.split(".", 1)
            row = conn.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r','p','v','m','f')",
                               (schema, name)).fetchone()
            if row is None:
                raise CredentialError("unknown_table", f"`credentials.tools.{self.tool}.tables`: table "
                                      f"`{qualified}` does not exist in the database")
            found.append((int(row[0]), schema, name))
        return found

    @staticmethod
    def _owned_sequences(conn: psycopg.Connection[Any], oids: list[int]) -> list[tuple[str, str]]:
        """Sequences behind the tables' serial and identity columns (an INSERT takes their next value)."""
        rows = conn.execute(
            "SELECT DISTINCT n.nspname, s.relname FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace "
            "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
            "AND d.refobjid = ANY(%s::oid[]) AND d.deptype IN ('a', 'i')", (oids,)).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def _check_least_privilege(self, conn: psycopg.Connection[Any], role: str, database: str,
                               tables: list[tuple[int, str, str]], granted: tuple[str, ...]) -> None:
        """Refuse a role that can do more than `granted` on the tables, or create objects.

        Raises:
            CredentialError: `excess_privilege`, naming each privilege too many.
        """
        names = {oid: f"{schema}.{name}" for oid, schema, name in tables}
        schemas = list(dict.fromkeys(s for _, s, _ in tables))
        unwanted = [p for p in _TABLE_PRIVILEGES if p not in granted]
        rows = conn.execute(  # one round trip: every privilege the role should not have, where it has it
            "SELECT 'table', t::text, p FROM unnest(%(oids)s::oid[]) AS t, unnest(%(privs)s::text[]) AS p "
            "WHERE CASE WHEN p = ANY(%(column)s::text[]) THEN has_any_column_privilege(%(role)s::name, t, p) "
            "ELSE has_table_privilege(%(role)s::name, t, p) END "
            "UNION ALL SELECT 'schema', n, 'CREATE' FROM unnest(%(schemas)s::text[]) AS n "
            "WHERE has_schema_privilege(%(role)s::name, n, 'CREATE') "
            "UNION ALL SELECT 'database', %(db)s, 'CREATE' "
            "WHERE has_database_privilege(%(role)s::name, %(db)s, 'CREATE')",
            {"oids": list(names), "privs": unwanted, "column": list(_COLUMN_PRIVILEGES), "role": role,
             "schemas": schemas, "db": database}).fetchall()
        extra = [f"{priv} on {names[int(obj)]}" if what == "table" else f"{priv} on {what} {obj}"
                 for what, obj, priv in rows]
        if extra:
            raise CredentialError("excess_privilege", f"a `{self.tool}` credential for {', '.join(granted)} would "
                                  f"also hold {'; '.join(extra)} (granted to PUBLIC?); not issued")

    # --- expire and release ---------------------------------------------------------------------------
    def expire(self, credential: Credential) -> None:
        """At `expires_at`: no new logins for the role, whatever the server's authentication method."""
        psycopg = _psycopg()
        from psycopg import sql

        assert credential.role is not None
        with self._lock:
            conn = self._admin()
            try:
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (credential.role,)).fetchone():
                    conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(credential.role)))
            except psycopg.Error as exc:
                raise CredentialError("release_failed", f"could not expire role {credential.role}: "
                                      f"{_first_line(exc)}") from exc

    def release(self, credential: Credential) -> str | None:
        """Drop the role (see the module doc). Returns a note, or None.

        Raises:
            CredentialError: `release_failed` or `postgresql_unavailable` (the role still cannot log in once
                its VALID UNTIL passes, and `sweep` drops it later).
        """
        assert credential.role is not None
        with self._lock:
            return self._drop(self._admin(), credential.role)

    def _drop(self, conn: psycopg.Connection[Any], role: str) -> str | None:
        psycopg = _psycopg()
        from psycopg import sql

        ident = sql.Identifier(role)
        try:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                return "the role was already dropped"
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))  # first: no new session meanwhile
            conn.execute("SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE usename = %s",
                         (_TERMINATE_WAIT_MS, role))
            with conn.transaction():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
                conn.execute(sql.SQL("DROP ROLE {}").format(ident))
        except psycopg.OperationalError as exc:
            raise CredentialError("postgresql_unavailable", f"could not drop role {role}: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise CredentialError("release_failed", f"could not drop role {role}: {_first_line(exc)}") from exc
        return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _role_dsn(psycopg: Any, admin_dsn: str, role: str, password: str, database: str) -> str:
    """The admin DSN's address and options, with the role's own login (never the admin's password)."""
    params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    for key in ("user", "password", "passfile", "dbname", "application_name"):
        params.pop(key, None)
    return str(psycopg.conninfo.make_conninfo(**params, user=role, password=password, dbname=database,
                                              application_name="aarmor-credential"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
