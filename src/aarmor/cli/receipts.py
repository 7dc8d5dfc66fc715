"""`aarmor receipts export|verify|show|tree-head|prove|verify-proof|verify-consistency`: signed receipts
out of the store, offline verification, and the transparency log (docs/transparency.md).

Rules: `verify` needs only the receipts file and public keys (no store, no private key); it exits 0 only
when every signature and chain link verifies, 1 naming each failure otherwise (an unparseable line is a
failure of that line, and an empty file verifies nothing, so it fails), 2 for unreadable input. The same
exit codes hold for `verify-proof` and `verify-consistency` (tree head signatures, audit paths, consistency),
and `prove`/`tree-head` exit 1 when the store's history no longer matches a tree head it published.
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


# --- the transparency log (docs/transparency.md) -------------------------------------------------------------

def _read_json(path: Path) -> Any:
    """One JSON document from a file; unreadable or not JSON exits 2 naming the file."""
    from aarmor.canonical import loads_strict
    from aarmor.errors import InputError

    try:
        return loads_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read `{path}`: {getattr(exc, 'strerror', None) or exc}") from exc
    except InputError as exc:
        raise fail(f"`{path}` is not JSON: {exc}") from exc


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@app.command("tree-head")
def tree_head(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Sign and publish a tree head of the whole receipt log now (keep it: it is what proofs are checked
    against)."""
    from aarmor.cli._common import load_keyring
    from aarmor.errors import AarmorError
    from aarmor.receipts.transparency import TransparencyLog, tree_head_json

    keyring = load_keyring(config, create=False)
    with opened_store(config) as store:
        try:
            head = TransparencyLog(store).publish(keyring, _now())
        except AarmorError as exc:
            raise fail(str(exc), 1) from exc
    if as_json:
        typer.echo(json.dumps(tree_head_json(head)))
    else:
        typer.echo(f"tree head: {head.tree_size} receipts, root {head.root_hash}, at {head.timestamp}, "
                   f"key {head.key_id}")


@app.command()
def prove(
    receipt_id: Annotated[str | None, typer.Argument(help="Receipt id (rct_...) to prove inclusion of.")] = None,
    tree_size: Annotated[int | None, typer.Option("--tree-size", help="Against the published tree head of "
                                                  "this size (default: the latest; one is published if the "
                                                  "latest does not cover the receipt).")] = None,
    consistency: Annotated[tuple[int, int] | None, typer.Option(
        "--consistency", metavar="OLD_SIZE NEW_SIZE", help="Prove the tree of OLD_SIZE leaves is a prefix of the "
        "published tree head of NEW_SIZE.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """An inclusion proof of a receipt, or a consistency proof between two tree sizes (save it with --json)."""
    from aarmor.errors import AarmorError
    from aarmor.receipts.transparency import TransparencyLog

    if (receipt_id is None) == (consistency is None):
        raise fail("give a receipt id, or --consistency OLD_SIZE NEW_SIZE (not both)")
    with opened_store(config) as store:
        tlog = TransparencyLog(store)
        try:
            if consistency is not None:
                doc = tlog.consistency(consistency[0], tlog.head(consistency[1]))
                summary = (f"consistency proof: tree of {doc['old_size']} receipts is a prefix of the tree of "
                           f"{doc['new_size']} ({len(doc['proof'])} hashes)")
            else:
                assert receipt_id is not None
                head = tlog.head(tree_size) if tree_size is not None else _covering_head(tlog, receipt_id, config)
                doc = tlog.inclusion(receipt_id, head)
                summary = (f"inclusion proof: receipt {receipt_id} is leaf {doc['leaf_index']} of the tree of "
                           f"{head.tree_size} receipts (root {head.root_hash}, {len(doc['audit_path'])} hashes)")
        except AarmorError as exc:
            raise fail(str(exc), 1) from exc
    typer.echo(json.dumps(doc) if as_json else summary)


def _covering_head(tlog: Any, receipt_id: str, config: Path | None) -> Any:
    """The latest tree head if it covers the receipt's leaf, else a new one published now."""
    from aarmor.cli._common import load_keyring

    latest = tlog.store.tree_head_latest()
    found = tlog.store.tree_leaf_index(receipt_id)
    if latest is not None and (found is None or found[0] < latest.tree_size):
        return latest
    return tlog.publish(load_keyring(config, create=False), _now())


def _proof_outcome(ok_message: str, error: Exception | None, config: Path | None, what: str, as_json: bool) -> None:
    if error is None:
        typer.echo(json.dumps({"ok": True, "message": ok_message}) if as_json else f"OK: {ok_message}")
        return
    typer.echo(json.dumps({"ok": False, "message": str(error)}) if as_json else f"FAIL: {error}")
    if config is not None:
        report_verification_failure(config, what, f"{what} verification failed: {error}", {})
    raise typer.Exit(1)


@app.command("verify-proof")
def verify_proof(
    proof: Annotated[Path, typer.Argument(help="Inclusion proof (from `aarmor receipts prove ID --json`).")],
    receipt: Annotated[Path | None, typer.Option("--receipt", help="The receipt (JSON) the proof must be about "
                                                 "(default: the copy embedded in the proof).")] = None,
    public_keys: PublicKeysOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify an inclusion proof offline: the tree head's signature, the receipt's, and the audit path."""
    from aarmor.receipts.transparency import ProofError, verify_inclusion_proof

    keys = public_keys_for(public_keys, config)
    doc = _read_json(proof)
    body = _read_json(receipt) if receipt is not None else None
    try:
        head = verify_inclusion_proof(doc, keys, receipt=body)
    except ProofError as exc:
        _proof_outcome("", exc, config, "inclusion proof", as_json)
        return
    _proof_outcome(f"receipt {doc['receipt_id']} is leaf {doc['leaf_index']} of the signed tree of {head.tree_size} "
                   f"receipts ({head.timestamp})", None, config, "inclusion proof", as_json)


@app.command("verify-consistency")
def verify_consistency(
    old: Annotated[Path, typer.Argument(help="The tree head kept from earlier (JSON).")],
    new: Annotated[Path, typer.Argument(help="The newer tree head (JSON).")],
    proof: Annotated[Path, typer.Argument(help="Consistency proof (from `aarmor receipts prove --consistency`).")],
    public_keys: PublicKeysOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify offline that the log of the old tree head is a prefix of the new one's (nothing removed or
    rewritten in between)."""
    from aarmor.receipts.transparency import ProofError, verify_consistency_proof

    keys = public_keys_for(public_keys, config)
    docs = _read_json(old), _read_json(new), _read_json(proof)
    try:
        o, n = verify_consistency_proof(*docs, keys)
    except ProofError as exc:
        _proof_outcome("", exc, config, "consistency proof", as_json)
        return
    _proof_outcome(f"the tree of {n.tree_size} receipts ({n.timestamp}) extends the tree of {o.tree_size} "
                   f"({o.timestamp})", None, config, "consistency proof", as_json)
