"""`aarmor keys generate|rotate|export-public`: the receipt signing keys."""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, fail, load_keyring

__all__ = ["app"]

app = typer.Typer(help="Manage the Ed25519 receipt signing keys.", no_args_is_help=True)


@app.command()
def generate(config: ConfigOption = None) -> None:
    """Create the first signing key (refuses if one exists: use `rotate`)."""
    from aarmor.config import load_config

    keys_dir = load_config(config).keys
    if (keys_dir / "current").exists():
        raise fail(f"a signing key already exists in `{keys_dir}`; use `aarmor keys rotate`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an explicit generate is not a surprise first-use key
        ring = load_keyring(config, create=True)
    typer.echo(f"generated {ring.current_key_id} in {keys_dir}")


@app.command()
def rotate(config: ConfigOption = None) -> None:
    """Make a new current key; old public keys stay so old receipts still verify."""
    ring = load_keyring(config, create=False)
    old = ring.current_key_id
    typer.echo(f"rotated {old} -> {ring.rotate()} (old key kept for verification)")


@app.command("export-public")
def export_public(
    fmt: Annotated[str, typer.Option("--format", help="pem or jwks.")] = "pem",
    config: ConfigOption = None,
) -> None:
    """Print every public key (for offline verification of receipts)."""
    if fmt not in ("pem", "jwks"):
        raise fail(f"unknown format `{fmt}`; expected pem or jwks")
    typer.echo(load_keyring(config, create=False).export_public(fmt), nl=False)
