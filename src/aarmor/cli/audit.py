"""`aarmor audit timeline --session S`: forensic reconstruction of a session from its receipts.

Each row is `timestamp tool.operation -> result` (what was enforced), with the PDP decision, rule and
reason. Every receipt is verified on the way (signature, chain, and the store's index columns against the
signed body) with the keyring's public keys or `--public-keys`; a row that fails is flagged, never
hidden, and the command exits 1.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, JsonOption, PublicKeysOption, fail, opened_store, public_keys_for

__all__ = ["app"]

app = typer.Typer(help="Forensic reconstruction from receipts.", no_args_is_help=True)


@app.callback()
def _audit() -> None:
    """Forensic reconstruction from receipts."""


@app.command()
def timeline(
    session: Annotated[str, typer.Option("--session", help="Session id.")],
    public_keys: PublicKeysOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild the session's timeline; exit 1 if any receipt fails verification."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from aarmor.receipts import build_timeline

    keys = public_keys_for(public_keys, config)
    with opened_store(config) as store:
        records = list(store.read_receipts(session))
    if not records:
        raise fail(f"no receipts for session `{session}`")
    tl = build_timeline(records, keys)
    if as_json:
        typer.echo(json.dumps({"session": session, **tl.to_json()}, indent=2))
    else:
        table = Table(title=f"session {escape(session)}")
        for col in ("timestamp", "action", "result", "decision", "ran", "rule / reason", "who", "receipt"):
            table.add_column(col)
        for e in tl.events:
            flag = "" if e.verified else "\n[red]FAILED: " + escape("; ".join(e.failures)) + "[/]"
            table.add_row(e.timestamp, escape(e.action), e.result, f"{e.decision} ({e.kind})",
                          "yes" if e.executed else "no", escape(f"{e.rule or '-'}: {e.reason}"),
                          escape(str(e.human or e.agent or "-")), escape(e.receipt_id[:16]) + flag)
        Console(width=160).print(table)
        unnamed = [f for f in tl.report.failures if f.receipt_id is None]
        for f in unnamed:
            typer.echo(f"FAIL [{f.code}] {f}")
        typer.echo("all receipts verified" if tl.ok else f"{len(tl.report.failures)} verification failure(s)")
    if not tl.ok:
        raise typer.Exit(1)
