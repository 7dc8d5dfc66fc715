"""Shared pieces of the sub-commands: the --config option, opening the store, error exits."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOption = Annotated[Path | None, typer.Option("--config", help="Configuration file (default: "
                                                   "$AARMOR_CONFIG, ./aarmor.yaml, then built-in defaults).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` to stderr and return the Exit to raise (2 = bad input, 1 = verification failed)."""
    print(f"aarmor: {message}", file=sys.stderr)
    return typer.Exit(code)


def open_guard(config: Path | None) -> Any:
    """The Guard of a long-running command (serve, gateway, ingest); a configuration or store it cannot open
    is bad input (exit 2, the reason on stderr)."""
    from aarmor import Guard
    from aarmor.errors import AarmorError

    try:
        return Guard.open(config)
    except AarmorError as exc:
        raise fail(str(exc)) from exc


@contextmanager
def opened_store(config: Path | None) -> Iterator[Any]:
    """The store named by the configuration; configuration or store errors exit 2 with the message."""
    from aarmor.config import load_config
    from aarmor.errors import AarmorError
    from aarmor.store import open_store

    try:
        store = open_store(load_config(config).store)
    except AarmorError as exc:
        raise fail(str(exc)) from exc
    try:
        yield store
    finally:
        store.close()


def load_keyring(config: Path | None, *, create: bool) -> Any:
    from aarmor.config import load_config
    from aarmor.errors import AarmorError
    from aarmor.receipts import Keyring

    try:
        return Keyring.open(load_config(config).keys, create=create)
    except AarmorError as exc:
        raise fail(str(exc)) from exc


PublicKeysOption = Annotated[Path | None, typer.Option(
    "--public-keys", help="JWKS or PEM bundle of public keys (default: the configured keyring's).")]


def public_keys_for(public_keys: Path | None, config: Path | None) -> Any:
    """The verification keys: from `--public-keys` when given (offline), else the configured keyring's."""
    from aarmor.errors import AarmorError
    from aarmor.receipts import load_public_keys

    if public_keys is None:
        return load_keyring(config, create=False).public_keys()
    try:
        return load_public_keys(public_keys)
    except AarmorError as exc:
        raise fail(str(exc)) from exc


def report_verification_failure(config: Path | None, what: str, message: str, detail: dict[str, Any]) -> None:
    """A failed `aarmor log verify` / `receipts verify` is an event for the SIEM (AARM R8) when the
    configuration has telemetry sinks: spooled into the configured store, delivered by the running exporters
    (or the next one to start). Best effort: a store that cannot take it is said on stderr."""
    from aarmor.canonical import format_ts
    from aarmor.config import load_config
    from aarmor.store import open_store
    from aarmor.telemetry.events import verification_failed

    try:
        cfg = load_config(config)
        if not cfg.telemetry.sinks:
            return
        from datetime import UTC, datetime

        store = open_store(cfg.store)
        try:
            store.telemetry_append([verification_failed(what, message, detail, time=format_ts(datetime.now(UTC)))])
        finally:
            store.close()
    except Exception as exc:
        typer.echo(f"note: could not spool the verification.failed telemetry event: {exc}", err=True)
