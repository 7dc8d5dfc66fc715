"""`aarmor log ...`: verify the context logs' hash chains (AARM R2 tamper evidence).

`aarmor log verify [--session S] [--config PATH | --store URL] [--json] [--no-anchors]` walks every
session's chain (or one) and cross-checks it against the anchors its receipts carry
(`context.log_seq`/`context.context_hash`), which makes a cut tail or a rewritten chain visible too.
Receipt signatures are not checked here (that is `aarmor receipts verify`).

Exit codes: 0 every chain verified; 1 a chain failed (the first failure is named: session, seq and what:
edited, deleted, inserted, reordered, truncated, foreign, malformed, unreadable); 2 bad input (no store,
unknown session, unreadable configuration).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aarmor.cli._common import report_verification_failure

__all__ = ["app"]

app = typer.Typer(help="Inspect and verify the hash-chained context log.", no_args_is_help=True)


@app.callback()
def _log() -> None:
    """Inspect and verify the hash-chained context log."""


def _store_url(store: str | None, config: Path | None) -> str:
    if store:
        return store
    from aarmor.config import load_config

    return load_config(config).store


def _anchors(st: Any, session_id: str) -> list[Any]:
    from aarmor.context import Anchor

    out = []
    for r in st.read_receipts(session_id):
        ctx = r.body.get("context") if isinstance(r.body, dict) else None
        if not isinstance(ctx, dict):
            continue
        seq, h = ctx.get("log_seq"), ctx.get("context_hash")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 and isinstance(h, str):
            out.append(Anchor(seq, h, f"receipt `{r.receipt_id}`"))
    return out


@app.command()
def verify(
    session: Annotated[str | None, typer.Option("--session", help="Verify only this session.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Config file (gives the store).")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Store URL; overrides the config.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    no_anchors: Annotated[bool, typer.Option("--no-anchors", help="Skip the receipts' anchors.")] = False,
) -> None:
    """Verify the hash chain of every context log in the store (exit 1 on the first bad entry)."""
    from aarmor.context import ChainFailure, ChainReport, check_chain
    from aarmor.errors import AarmorError
    from aarmor.store import open_store

    try:
        st = open_store(_store_url(store, config))
    except AarmorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    reports: list[ChainReport] = []
    try:
        if session is not None:
            sessions = [session]
        else:
            sessions = list(dict.fromkeys([*st.log_sessions(), *(r.session_id for r in st.read_receipts())]))
        for sid in sessions:
            try:
                records = list(st.read_log(sid))
                anchors = [] if no_anchors else _anchors(st, sid)
            except Exception as exc:  # a row an attacker made unparseable is a failure, not a crash
                fail = ChainFailure(sid, None, "unreadable", f"session `{sid}`: cannot read the log: "
                                                             f"{type(exc).__name__}: {exc}")
                reports.append(ChainReport(sid, 0, None, 0, (fail,)))
                continue
            if session is not None and not records and not anchors:
                typer.echo(f"error: session `{sid}` has no context log in `{st.url}`", err=True)
                raise typer.Exit(2)
            reports.append(check_chain(records, session_id=sid, anchors=anchors))
    finally:
        st.close()

    failures = [f for r in reports for f in r.failures]
    entries = sum(r.entries for r in reports)
    if as_json:
        typer.echo(json.dumps({
            "verified": not failures, "sessions": len(reports), "entries": entries,
            "anchors": sum(r.anchors_checked for r in reports),
            "failures": [{"session_id": f.session_id, "seq": f.seq, "what": f.what, "message": f.message}
                         for f in failures],
        }, indent=2))
    else:
        for r in reports:
            state = "ok" if r.verified else "FAILED"
            typer.echo(f"{state:6} session `{r.session_id}`: {r.entries} entries, "
                       f"{r.anchors_checked} anchors")
            for f in r.failures:
                typer.echo(f"       {f.what}: {f.message}")
        if failures:
            f = failures[0]
            typer.echo(f"verification FAILED: first bad entry: session `{f.session_id}` seq {f.seq} "
                       f"({f.what}); {len(failures)} failure(s) in "
                       f"{sum(1 for r in reports if not r.verified)} session(s)")
        else:
            typer.echo(f"verified {len(reports)} session(s), {entries} entries")
    if failures:
        if store is None:  # the configured store: the failure is also a telemetry event (AARM R8)
            f = failures[0]
            report_verification_failure(config, "chain", f"context log verification failed: session "
                                        f"`{f.session_id}` seq {f.seq} ({f.what}): {f.message}",
                                        {"failures": len(failures), "session_id": f.session_id, "seq": f.seq})
        raise typer.Exit(1)
