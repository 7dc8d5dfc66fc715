"""`aarmor tokens create|list|revoke`: bearer tokens for the HTTP API, the approver page and the CLI.

Rules: a secret is printed exactly once, at creation (the store keeps only its digest); `list` never shows
secrets; the token's name is the principal it authenticates (an approver's name goes into receipts).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail, opened_store

__all__ = ["app"]

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The principal this token authenticates (e.g. alice@example.com).")],
    role: Annotated[str, typer.Option("--role", help="agent, approver or admin.")] = "agent",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token and print its secret (shown once: store it now)."""
    from aarmor.errors import InputError
    from aarmor.tokens import create_token

    with opened_store(config) as store:
        try:
            tok, secret = create_token(store, name, role, now=datetime.now(UTC))
        except InputError as exc:
            raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps({"token_id": tok.token_id, "name": tok.name, "role": tok.role, "secret": secret}))
        return
    typer.echo(f"created {tok.token_id} for `{tok.name}` (role {tok.role})")
    typer.echo(secret)
    typer.echo("this secret is shown once; only its digest is stored", err=True)


@app.command("list")
def list_tokens(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List tokens (ids, names, roles, revocation; never secrets)."""
    with opened_store(config) as store:
        toks = store.token_list()
    if as_json:
        typer.echo(json.dumps([{"token_id": t.token_id, "name": t.name, "role": t.role, "created_at": t.created_at,
                                "revoked_at": t.revoked_at} for t in toks]))
        return
    if not toks:
        typer.echo("no tokens; create one with `aarmor tokens create NAME --role admin|approver|agent`")
    for t in toks:
        state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
        typer.echo(f"{t.token_id}  {t.role:<8}  {t.name}  (created {t.created_at}, {state})")


@app.command()
def revoke(token_id: Annotated[str, typer.Argument(help="Token id (tok_...), from `aarmor tokens list`.")],
           config: ConfigOption = None) -> None:
    """Revoke a token: it stops working at once (the page's web sessions end at their next request)."""
    from aarmor.canonical import format_ts

    with opened_store(config) as store:
        if not store.token_revoke(token_id, format_ts(datetime.now(UTC))):
            raise fail(f"no active token `{token_id}`")
    typer.echo(f"revoked {token_id}")
