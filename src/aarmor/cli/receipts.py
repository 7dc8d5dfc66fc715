"""`aarmor receipts export|verify|show`: signed receipts out of the store and offline verification.

Rules: `verify` needs only the receipts file and public keys (no store, no private key); it exits 0 only
when every signature and chain link verifies, 1 naming each failure otherwise (an unparseable line is a
failure of that line, and an empty file verifies nothing, so it fails), 2 for unreadable input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aarmor.cli._common import (
    ConfigOption,
    JsonOption,
    PublicKeysOption,
    fail,
    opened_store,
    public_keys_for,
    report_verification_failure,
)

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.receipts import ReceiptFailure

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


def read_jsonl(path: Path) -> tuple[list[Any], list[ReceiptFailure]]:
    """Receipts from a JSON-lines file, and one failure per line that is not JSON (naming the line).

    Raises:
        typer.Exit: (code 2) the file cannot be read.
    """
    from aarmor.canonical import loads_strict
    from aarmor.errors import InputError
    from aarmor.receipts import ReceiptFailure
    from aarmor.receipts.verify import MALFORMED

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read `{path}`: {getattr(exc, 'strerror', None) or exc}") from exc
    out: list[Any] = []
    bad: list[ReceiptFailure] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(loads_strict(line))
        except InputError as exc:
            bad.append(ReceiptFailure(None, None, None, f"`{path}` line {n}: {exc}", MALFORMED))
    return out, bad


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="Receipts as JSON lines (from `aarmor receipts export`).")],
    public_keys: PublicKeysOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify every signature and chain link offline; exit 0 only if all verify."""
    from aarmor.receipts import verify_receipts

    keys = public_keys_for(public_keys, config)
    bodies, unreadable = read_jsonl(file)
    report = verify_receipts(bodies, keys)
    report.failures[:0] = unreadable
    report.checked += len(unreadable)
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        for f in report.failures:
            typer.echo(f"FAIL [{f.code}] {f}")
        if report.checked == 0:
            typer.echo("no receipts in the file: nothing verified")
        elif report.ok:
            typer.echo(f"OK: {report.checked} receipts in {report.sessions} session(s): every signature and "
                       "chain link verified")
        else:
            typer.echo(f"{len(report.failures)} failure(s) in {report.checked} receipts")
    if not report.ok:
        if config is not None:  # with a configuration: the failure is also a telemetry event (AARM R8)
            first = report.failures[0]
            report_verification_failure(config, "receipts", f"receipt verification failed for `{file}`: "
                                        f"[{first.code}] {first}", {"failures": len(report.failures),
                                                                    "checked": report.checked})
        raise typer.Exit(1)


@app.command()
def show(receipt_id: Annotated[str, typer.Argument(help="Receipt id (rct_...).")],
         config: ConfigOption = None) -> None:
    """Print one receipt as indented JSON."""
    with opened_store(config) as store:
        rec = store.get_receipt(receipt_id)
    if rec is None:
        raise fail(f"no receipt `{receipt_id}` in the store")
    typer.echo(json.dumps(rec.body, indent=2, ensure_ascii=False))
