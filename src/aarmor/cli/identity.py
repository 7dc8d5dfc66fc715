"""`aarmor identity revoke|unrevoke|list`: identity revocations (AARM R6; docs/identity.md "Revocation").

Not `aarmor tokens revoke`, which revokes the HTTP API's own credentials. A revocation names exactly one of
a token id (`jti`), a subject or an agent; it is written to the configured store, and every Guard on that
store refuses the identity from its next decision on. Like `aarmor tokens`, these commands act with the
store's own authority (whoever can write the store file can revoke); `--by` names who is recorded.

Exit codes: 0 done (revoking what is already revoked is done: the first revocation stays); 2 bad input
(no kind or more than one, empty value, bad --until) or nothing to unrevoke.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail, opened_store

__all__ = ["app"]

app = typer.Typer(help="Revoke identities (token ids, subjects, agents) and list revocations.",
                  no_args_is_help=True)

TokenIdOption = Annotated[str | None, typer.Option("--token-id", help="A token id: the `jti` of a bearer or "
                                                   "delegation token.")]
SubjectOption = Annotated[str | None, typer.Option("--subject", help="A human principal or service identity.")]
AgentOption = Annotated[str | None, typer.Option("--agent", help="An agent identity.")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who is recorded as doing this (default: your "
                                              "login name).")]


def _target(token_id: str | None, subject: str | None, agent: str | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("token", token_id), ("subject", subject), ("agent", agent)) if v is not None]
    if len(given) != 1:
        raise fail("name exactly one of --token-id, --subject or --agent" +
                   (f" (got {len(given)})" if given else ""))
    return given[0]


def _by(by: str | None) -> str:
    if by is not None:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        raise fail("cannot tell who you are; pass --by NAME") from None


def _until(text: str | None) -> datetime | None:
    if text is None:
        return None
    from aarmor.canonical import parse_ts

    try:
        return parse_ts(text)
    except ValueError:
        raise fail(f"--until `{text}` is not an ISO 8601 time with a timezone (e.g. 2026-12-31T00:00:00Z)") from None


@app.command()
def revoke(
    token_id: TokenIdOption = None,
    subject: SubjectOption = None,
    agent: AgentOption = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (shown in every DENY it causes).")] =
        "no reason given",
    until: Annotated[str | None, typer.Option("--until", help="End of the revocation (ISO 8601 with a "
                                              "timezone); default: for ever.")] = None,
    by: ByOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token id, subject or agent: every Guard on this store refuses it from its next decision."""
    from aarmor.errors import InputError, StoreError
    from aarmor.identity.revocation import revoke as do_revoke

    kind, value = _target(token_id, subject, agent)
    who, end = _by(by), _until(until)
    with opened_store(config) as store:
        try:
            rev, created = do_revoke(store, kind, value, reason=reason, by=who, now=datetime.now(UTC), until=end)
        except (InputError, StoreError) as exc:
            raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps({**rev.to_json(), "created": created}))
    elif created:
        typer.echo(f"revoked {kind} `{value}`" + (f" until {rev.until}" if rev.until else ""))
    else:
        typer.echo(f"{kind} `{value}` was already revoked ({rev.revoked_at} by {rev.revoked_by}: {rev.reason}); "
                   "kept as it was")


@app.command()
def unrevoke(
    token_id: TokenIdOption = None,
    subject: SubjectOption = None,
    agent: AgentOption = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the revocation history).")] =
        "no reason given",
    by: ByOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Lift a revocation (a mistaken one, say); the history keeps both the revocation and this."""
    from aarmor.errors import InputError, StoreError
    from aarmor.identity.revocation import unrevoke as do_unrevoke

    kind, value = _target(token_id, subject, agent)
    who = _by(by)
    with opened_store(config) as store:
        try:
            lifted = do_unrevoke(store, kind, value, reason=reason, by=who, now=datetime.now(UTC))
        except (InputError, StoreError) as exc:  # NotFound is an InputError
            raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps({"unrevoked": lifted.to_json()}))
    else:
        typer.echo(f"unrevoked {kind} `{value}` (revoked {lifted.revoked_at} by {lifted.revoked_by})")


@app.command("list")
def list_revocations(
    show_all: Annotated[bool, typer.Option("--all", help="Also revocations whose --until has passed.")] = False,
    history: Annotated[bool, typer.Option("--history", help="Every revoke and unrevoke, oldest first.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the revocations in force (or, with --history, every change to them)."""
    from aarmor.canonical import format_ts

    now = format_ts(datetime.now(UTC))
    with opened_store(config) as store:
        if history:
            events = store.revocation_history()
            if as_json:
                typer.echo(json.dumps([e.to_json() for e in events]))
                return
            if not events:
                typer.echo("no revocation was ever made")
            for e in events:
                until = f" until {e.until}" if e.until else ""
                typer.echo(f"{e.seq:>5}  {e.at}  {e.event:<8}  {e.kind:<7}  {e.value}  by {e.actor}{until}: "
                           f"{e.reason}")
            return
        revs = store.revocation_list(now=None if show_all else now)
    if as_json:
        typer.echo(json.dumps([{**r.to_json(), "in_force": r.in_force(now)} for r in revs]))
        return
    if not revs:
        typer.echo("no revocations in force")
    for r in revs:
        state = "" if r.until is None else (f"  until {r.until}" if r.until > now else f"  ended {r.until}")
        typer.echo(f"{r.kind:<7}  {r.value}  (revoked {r.revoked_at} by {r.revoked_by}{state}): {r.reason}")
