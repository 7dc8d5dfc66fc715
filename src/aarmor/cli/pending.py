"""`aarmor approvals ...` and `aarmor deferrals ...`: decide STEP_UP requests and resolve deferrals from a
terminal, on the same store as the waiting callers (another process; they see the change within their
poll interval).

Deciding needs the approver's own credential: `--token` or `$AARMOR_TOKEN` (an `approver` or `admin`
token from `aarmor tokens create`); the token's name is the approver recorded in the signed receipt.
Listing and showing read the store directly (whoever can read the store can read the items anyway).

Exit codes: 0 done; 1 refused (self-approval, not an approver, no longer pending, bad field);
2 bad input (unknown id, missing or invalid token, malformed --set).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail

__all__ = ["approvals_app", "deferrals_app"]

approvals_app = typer.Typer(help="List, show, approve and deny STEP_UP requests.", no_args_is_help=True)
deferrals_app = typer.Typer(help="List, show and resolve deferred actions.", no_args_is_help=True)

TokenOption = Annotated[str | None, typer.Option("--token", help="Your approver token (default: $AARMOR_TOKEN).")]
StatusOption = Annotated[str, typer.Option("--status", help="pending (default), all, or one status.")]
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the signed receipt).")]


@contextmanager
def _desks(config: Path | None) -> Iterator[tuple[Any, Any, Any]]:
    from aarmor.approvals.service import ApprovalDesk
    from aarmor.config import load_config
    from aarmor.deferrals.service import DeferralDesk
    from aarmor.errors import AarmorError
    from aarmor.store import open_store

    try:
        cfg = load_config(config)
        store = open_store(cfg.store)
    except AarmorError as exc:
        raise fail(str(exc)) from exc
    try:
        yield (ApprovalDesk(store, cfg.approvals, clock=_now), DeferralDesk(store, cfg.deferrals, clock=_now),
               store)
    finally:
        store.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _who(store: Any, token: str | None) -> str:
    from aarmor.errors import AuthError
    from aarmor.tokens import authenticate

    try:
        return str(authenticate(store, token or os.environ.get("AARMOR_TOKEN"), roles=("approver",)).name)
    except AuthError as exc:
        raise fail(f"cannot authenticate the approver: {exc}") from exc


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from aarmor.errors import InputError, NotFound, Refused

    try:
        return fn(*args, **kwargs)
    except Refused as exc:
        raise fail(f"refused ({exc.code}): {exc}", 1) from exc
    except (NotFound, InputError) as exc:
        raise fail(str(exc)) from exc


def _status(status: str) -> str | None:
    return None if status == "all" else status


def _print_items(items: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for col in ("status", "action", "why", "deadline", "who"):
        table.add_column(col, overflow="fold")
    for it in items:
        req = it.get("request", {})
        action = f"{req.get('tool')}.{req.get('operation')}" if req.get("operation") else str(req.get("tool"))
        who = ", ".join(it.get("approvers", [])) if it["kind"] == "approval" else ", ".join(
            it.get("context_needed", [])) or ", ".join(it.get("depends_on", []))
        why = req.get("reason") if it["kind"] == "approval" else it.get("reason")
        table.add_row(it["id"], it["status"], action, str(why), it["deadline"], who)
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    if not items:
        typer.echo("(none)")


# --- approvals ---------------------------------------------------------------------------------------
@approvals_app.command("list")
def approvals_list(config: ConfigOption = None, status: StatusOption = "pending", as_json: JsonOption = False) -> None:
    """List approval requests (pending ones by default)."""
    with _desks(config) as (approvals, _, _store):
        _print_items(approvals.list(status=_status(status)), as_json, "approval requests")


@approvals_app.command("show")
def approvals_show(request_id: str, config: ConfigOption = None) -> None:
    """Print one request with its full context as JSON."""
    with _desks(config) as (approvals, _, _store):
        typer.echo(json.dumps(_call(approvals.get, request_id), indent=2))


def _decide(request_id: str, config: Path | None, token: str | None, reason: str, granted: bool) -> None:
    with _desks(config) as (approvals, _, store):
        who = _who(store, token)
        view = _call(approvals.decide, request_id, approver=who, granted=granted, reason=reason, channel="cli")
        typer.echo(f"{'approved' if granted else 'denied'} {request_id} as `{who}`; the waiting action "
                   f"{view['action_id']} is released within its poll interval")


@approvals_app.command("approve")
def approvals_approve(request_id: str, reason: ReasonOption, config: ConfigOption = None,
                      token: TokenOption = None) -> None:
    """Approve a pending request (you must be among its approvers and not its requester)."""
    _decide(request_id, config, token, reason, True)


@approvals_app.command("deny")
def approvals_deny(request_id: str, reason: ReasonOption, config: ConfigOption = None,
                   token: TokenOption = None) -> None:
    """Deny a pending request."""
    _decide(request_id, config, token, reason, False)


# --- deferrals ---------------------------------------------------------------------------------------
@deferrals_app.command("list")
def deferrals_list(config: ConfigOption = None, status: StatusOption = "pending", as_json: JsonOption = False) -> None:
    """List deferred actions (pending ones by default)."""
    with _desks(config) as (_, deferrals, _store):
        _print_items(deferrals.list(status=_status(status)), as_json, "deferred actions")


@deferrals_app.command("show")
def deferrals_show(deferral_id: str, config: ConfigOption = None) -> None:
    """Print one deferral with its context and resolution attempts as JSON."""
    with _desks(config) as (_, deferrals, _store):
        typer.echo(json.dumps(_call(deferrals.get, deferral_id), indent=2))


@deferrals_app.command("resolve")
def deferrals_resolve(
    deferral_id: str,
    set_: Annotated[list[str], typer.Option("--set", help="field=value (value parsed as JSON when it is JSON, "
                                                          "else taken as text); repeatable.")],
    config: ConfigOption = None, token: TokenOption = None,
) -> None:
    """Supply the context a deferral needs; its action is then re-evaluated by the policy."""
    fields: dict[str, Any] = {}
    for item in set_:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise fail(f"--set `{item}` is not field=value")
        try:
            fields[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            fields[name.strip()] = raw
    with _desks(config) as (_, deferrals, store):
        who = _who(store, token)
        _call(deferrals.supply, deferral_id, fields, by=who, channel="cli")
        typer.echo(f"supplied {', '.join(sorted(fields))} to {deferral_id} as `{who}`; the action is "
                   "re-evaluated by its waiting caller")
