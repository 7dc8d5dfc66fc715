"""`aarmor keys generate|rotate|export-public|list`: the receipt signing keys.

Rules: `generate` refuses to overwrite (use `rotate`); `rotate` keeps every old key so old receipts still
verify; output names keys only by id and never prints private key material.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail, load_keyring

__all__ = ["app"]

app = typer.Typer(help="Manage the Ed25519 receipt signing keys.", no_args_is_help=True)


def _keys_dir(config: Path | None) -> Path:
    from aarmor.config import load_config
    from aarmor.errors import AarmorError

    try:
        return load_config(config).keys
    except AarmorError as exc:
        raise fail(str(exc)) from exc


@app.command()
def generate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Create the first signing key (refuses if one exists: use `rotate`)."""
    keys_dir = _keys_dir(config)
    if (keys_dir / "current").exists():
        raise fail(f"a signing key already exists in `{keys_dir}`; use `aarmor keys rotate`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an explicit generate is not a surprise first-use key
        ring = load_keyring(config, create=True)
    if as_json:
        typer.echo(json.dumps({"key_id": ring.current_key_id, "directory": str(keys_dir)}))
    else:
        typer.echo(f"generated {ring.current_key_id} in {keys_dir}")


@app.command()
def rotate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Make a new current key; old public keys stay so old receipts still verify."""
    ring = load_keyring(config, create=False)
    old = ring.current_key_id
    try:
        new = ring.rotate()
    except OSError as exc:
        raise fail(f"cannot write a new key in `{ring.directory}`: {exc.strerror}") from exc
    if as_json:
        typer.echo(json.dumps({"previous": old, "current": new, "keys": list(ring.key_ids)}))
    else:
        typer.echo(f"rotated {old} -> {new} (old key kept for verification)")


@app.command("list")
def list_keys(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List key ids; the current signing key is marked."""
    ring = load_keyring(config, create=False)
    if as_json:
        typer.echo(json.dumps({"current": ring.current_key_id, "keys": list(ring.key_ids)}))
        return
    for kid in ring.key_ids:
        typer.echo(f"{'*' if kid == ring.current_key_id else ' '} {kid}")


@app.command("export-public")
def export_public(
    fmt: Annotated[str, typer.Option("--format", help="pem or jwks.")] = "pem",
    config: ConfigOption = None,
) -> None:
    """Print every public key (for offline verification of receipts)."""
    if fmt not in ("pem", "jwks"):
        raise fail(f"unknown format `{fmt}`; expected pem or jwks")
    typer.echo(load_keyring(config, create=False).export_public(fmt), nl=False)
