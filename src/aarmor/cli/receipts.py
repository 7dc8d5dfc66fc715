"""`aarmor receipts export|verify|show`: signed receipts out of the store and offline verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail, opened_store

__all__ = ["app", "read_jsonl"]

app = typer.Typer(help="Export, verify and show signed receipts.", no_args_is_help=True)


@app.command()
def export(
    session: Annotated[str | None, typer.Option("--session", help="Only this session.")] = None,
    config: ConfigOption = None,
) -> None:
    """Print receipts as JSON lines (by session, in chain order)."""
    with opened_store(config) as store:
        for r in store.read_receipts(session):
            typer.echo(json.dumps(r.body, separators=(",", ":"), ensure_ascii=False))


def read_jsonl(path: Path) -> list[Any]:
    """Receipts from a JSON-lines file; a line that is not JSON exits 2 naming the line."""
    from aarmor.canonical import loads_strict
    from aarmor.errors import InputError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise fail(f"cannot read `{path}`: {exc.strerror}") from exc
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(loads_strict(line))
        except InputError as exc:
            raise fail(f"`{path}` line {n}: {exc}") from exc
    return out


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="Receipts as JSON lines (from `aarmor receipts export`).")],
    public_keys: Annotated[Path, typer.Option("--public-keys", help="JWKS or PEM bundle of public keys.")],
    as_json: JsonOption = False,
) -> None:
    """Verify every signature and chain link offline; exit 0 only if all verify."""
    from aarmor.errors import AarmorError
    from aarmor.receipts import load_public_keys, verify_receipts

    try:
        keys = load_public_keys(public_keys)
    except AarmorError as exc:
        raise fail(str(exc)) from exc
    report = verify_receipts(read_jsonl(file), keys)
    if as_json:
        typer.echo(json.dumps({"ok": report.ok, "checked": report.checked, "sessions": report.sessions,
                               "failures": [{"receipt_id": f.receipt_id, "session_id": f.session_id,
                                             "seq": f.seq, "reason": f.reason} for f in report.failures]}))
    else:
        for f in report.failures:
            typer.echo(f"FAIL {f}")
        if report.checked == 0:
            typer.echo("no receipts in the file")
        elif report.ok:
            typer.echo(f"OK: {report.checked} receipts in {report.sessions} session(s): every signature and "
                       "chain link verified")
        else:
            typer.echo(f"{len(report.failures)} failure(s) in {report.checked} receipts")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def show(receipt_id: Annotated[str, typer.Argument(help="Receipt id (rct_...).")], config: ConfigOption = None) -> None:
    """Print one receipt as indented JSON."""
    with opened_store(config) as store:
        rec = store.get_receipt(receipt_id)
    if rec is None:
        raise fail(f"no receipt `{receipt_id}` in the store")
    typer.echo(json.dumps(rec.body, indent=2, ensure_ascii=False))
