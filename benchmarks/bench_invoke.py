"""Full mediated call: `session.invoke` = normalise + snapshot + PDP + durable "requested" log entry +
execute + outcome entry and Ed25519-signed receipt in one durable commit.

Baselines measured in the same run: the bare function call, one durable SQLite commit, one Ed25519
signature over a receipt-sized canonical payload, and the PDP alone, so the cost of each part is visible.
"""

from __future__ import annotations

import sqlite3
import tempfile
import warnings
from pathlib import Path

from _timing import Result, measure
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aarmor import Guard, Identity
from aarmor.canonical import canonical_bytes

POLICY = """
policy: {id: bench, version: "1", default: ALLOW, internal_domains: [company.com]}
rules:
  - id: deny-shell
    match: {tool: shell}
    action: DENY
    reason: no shell
  - id: cap-bulk
    match: {tool: database, operation: query, parameters: {limit: {gt: 100}}}
    action: MODIFY
    modifications: {parameters: {limit: 100}}
    reason: cap bulk reads
"""


def _sqlite_commit(path: Path, sync: str) -> object:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    body = "x" * 600

    def commit() -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (v) VALUES (?)", (body,))
        db.execute("COMMIT")

    return commit


def _call_commits(store_db: sqlite3.Connection, path: Path, sync: str) -> object:
    """The SQL one mediated call runs, alone: the rows the last call wrote, replayed into a fresh file
    with aarmor's schema as two commits (the "requested" entry; the outcome entry plus the receipt)."""
    from aarmor.store.sqlite import _SCHEMA

    requested, outcome = reversed(store_db.execute(
        "SELECT * FROM log_entries ORDER BY seq DESC LIMIT 2").fetchall())
    receipt = store_db.execute("SELECT * FROM receipts ORDER BY rowid DESC LIMIT 1").fetchone()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.executescript(_SCHEMA)
    seq = iter(range(10**9))

    def commit() -> None:
        i = next(seq)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO log_entries VALUES (?,?,?,?,?,?,?)", ("s", 2 * i, *requested[2:]))
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO log_entries VALUES (?,?,?,?,?,?,?)", ("s", 2 * i + 1, *outcome[2:]))
        db.execute("INSERT INTO receipts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (f"r{i}", "s", i, *receipt[3:]))
        db.execute("COMMIT")

    return commit


def run(n: int = 5_000) -> list[Result]:
    tmp = Path(tempfile.mkdtemp(prefix="aarmor-bench-"))
    (tmp / "policy.yaml").write_text(POLICY)
    results: list[Result] = []

    def tool(arguments: dict[str, object]) -> str:
        return "ok"

    results.append(measure("baseline: bare tool call", lambda: tool({"to": "bob@company.com"}), n=n))
    key = Ed25519PrivateKey.generate()
    payload = {"receipt_id": "rct_" + "0" * 32, "action": {"tool": "email", "parameters": {"to": "b" * 40}},
               "decision": {"result": "ALLOW", "reason": "r" * 80}, "context": {"context_hash": "sha256:" + "0" * 64}}
    results.append(measure("baseline: canonicalise + Ed25519 sign", lambda: key.sign(canonical_bytes(payload)),
                           n=n))
    for sync in ("FULL", "NORMAL"):
        results.append(measure(f"baseline: one SQLite WAL commit, synchronous={sync}",
                               _sqlite_commit(tmp / f"base-{sync}.db", sync), n=n))  # type: ignore[arg-type]
    for sync in ("full", "normal"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guard = Guard.open(policy=str(tmp / "policy.yaml"), store=f"sqlite:///{tmp / sync}.db?synchronous={sync}",
                               keys=str(tmp / "keys"))
        session = guard.session(identity=Identity(human="alice@company.com", service="agent"),
                                original_request="send the weekly report to bob")
        args = {"to": "bob@company.com", "subject": "weekly report", "body": "numbers attached"}
        results.append(measure(f"session.evaluate (dry run: snapshot + PDP), {sync}",
                               lambda s=session, a=args: s.evaluate("email.send", a), n=n))
        results.append(measure(f"session.invoke ALLOW, SQLite synchronous={sync}",
                               lambda s=session, a=args: s.invoke("email.send", a, tool), n=n))
        results.append(measure(f"baseline: the call's own two commits alone, synchronous={sync}",
                               _call_commits(guard.store._db, tmp / f"floor-{sync}.db", sync.upper()),  # type: ignore[attr-defined, arg-type]
                               n=n))
        session.close()
        guard.close()
    return results


if __name__ == "__main__":
    from _timing import HEADER

    print(HEADER)
    for r in run():
        print(r.row())
