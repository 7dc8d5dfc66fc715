"""`aarmor audit timeline --session S`: forensic reconstruction of a session from its receipts.

Each row is `time tool.operation -> decision / what was enforced`, with the rule and reason; every
receipt is verified against the keyring's public keys on the way, and a row that fails is flagged.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail, load_keyring, opened_store

__all__ = ["app"]

app = typer.Typer(help="Forensic reconstruction from receipts.", no_args_is_help=True)


@app.callback()
def _audit() -> None:
    """Forensic reconstruction from receipts."""


@app.command()
def timeline(
    session: Annotated[str, typer.Option("--session", help="Session id.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild the session's timeline; exit 1 if any receipt fails verification."""
    from rich.console import Console
    from rich.table import Table

    from aarmor.receipts import verify_receipts

    with opened_store(config) as store:
        bodies = [r.body for r in store.read_receipts(session)]
    if not bodies:
        raise fail(f"no receipts for session `{session}`")
    report = verify_receipts(bodies, load_keyring(config, create=False).public_keys())
    bad = {f.receipt_id: f.reason for f in report.failures}
    rows = []
    for r in bodies:
        a, d = r["action"], r["decision"]
        enforced = (r.get("enforcement") or {}).get("result", d["result"])
        rows.append({
            "time": a["timestamp"], "action": f"{a['tool']}.{a['operation']}" if a["operation"] else a["tool"],
            "kind": r["kind"], "decision": d["result"], "enforced": enforced,
            "executed": bool(r.get("execution")), "rule": d.get("rule_id") or d.get("defer_trigger"),
            "reason": d["reason"], "human": a["requester_context"]["human"], "receipt_id": r["receipt_id"],
            "verified": r["receipt_id"] not in bad, "failure": bad.get(r["receipt_id"]),
        })
    if as_json:
        typer.echo(json.dumps({"session": session, "ok": report.ok, "events": rows}, indent=2))
    else:
        table = Table(title=f"session {session}")
        for col in ("time", "action", "decision", "enforced", "ran", "rule / reason", "receipt"):
            table.add_column(col)
        for row in rows:
            flag = "" if row["verified"] else f" [red]FAILED: {row['failure']}[/]"
            table.add_row(row["time"], row["action"], f"{row['decision']} ({row['kind']})", row["enforced"],
                          "yes" if row["executed"] else "no", f"{row['rule'] or '-'}: {row['reason']}",
                          row["receipt_id"][:16] + flag)
        Console().print(table)
        typer.echo("all receipts verified" if report.ok else f"{len(report.failures)} receipt(s) FAILED")
    if not report.ok:
        raise typer.Exit(1)
