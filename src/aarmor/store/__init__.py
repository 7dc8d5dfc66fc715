"""Storage for context logs and receipts: `open_store(url)` picks the backend.

URLs: `sqlite:///absolute/or/relative/path.db[?synchronous=full|normal|extra]`, `memory://`.
PostgreSQL arrives with the cluster issue.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from aarmor.errors import StoreError
from aarmor.store.base import Store
from aarmor.store.records import (
    GENESIS,
    RECOVERED,
    REVOCATION_KINDS,
    ApiToken,
    CredentialEvent,
    InflightRecord,
    LogRecord,
    PendingRecord,
    ReceiptRecord,
    Revocation,
    RevocationEvent,
    TreeHead,
)

__all__ = ["GENESIS", "RECOVERED", "REVOCATION_KINDS", "ApiToken", "CredentialEvent", "InflightRecord", "LogRecord",
           "PendingRecord", "ReceiptRecord", "Revocation", "RevocationEvent", "Store", "TreeHead", "open_store"]


def open_store(url: str) -> Store:
    """Open the store at `url`.

    Raises:
        StoreError: unknown scheme, bad options, or the store cannot be opened.
    """
    if url == "memory://":
        from aarmor.store.memory import MemoryStore

        return MemoryStore()
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from aarmor.store.sqlite import SqliteStore

        # sqlite:///abs/path.db is absolute; sqlite://rel.db is relative to the working directory.
        path = url[len("sqlite://"):].split("?", 1)[0]
        if not path or path == "/":
            raise StoreError(f"store URL `{url}` names no file; expected sqlite:///path/to/aarmor.db")
        opts = parse_qs(parts.query)
        unknown = set(opts) - {"synchronous"}
        if unknown:
            raise StoreError(f"store URL `{url}`: unknown option `{sorted(unknown)[0]}`, expected synchronous")
        sync = opts.get("synchronous", ["full"])[-1].lower()
        return SqliteStore(path, synchronous=sync)
    if parts.scheme in ("postgresql", "postgres"):
        from aarmor.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(f"store URL `{url}` has unsupported scheme `{parts.scheme}`; expected sqlite, postgresql "
                     "or memory")
