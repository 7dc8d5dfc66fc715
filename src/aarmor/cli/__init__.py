"""The `aarmor` command line. Sub-commands live in sibling modules; each imports its heavy parts lazily.

Exit codes everywhere: 0 ok, 1 a verification or test failed, 2 bad input or usage.
"""

from __future__ import annotations

import sys

import typer

from aarmor import __version__

app = typer.Typer(
    name="aarmor",
    help="Runtime security for AI agent actions (CSA AARM): policy, signed receipts, verifiable context.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aarmor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """aarmor: intercept, evaluate, enforce and record every agent action."""


def _wire() -> None:
    from aarmor.cli import (
        audit,
        calibrate,
        demo,
        gateway,
        hook,
        identity,
        ingest,
        keys,
        log,
        pending,
        policy,
        receipts,
        serve,
        telemetry,
        tokens,
    )

    app.add_typer(policy.app, name="policy", help="Check, test and explain policies.")
    app.add_typer(keys.app, name="keys", help="Manage receipt signing keys.")
    app.add_typer(receipts.app, name="receipts", help="Export, verify and show signed receipts.")
    app.add_typer(log.app, name="log", help="Verify the hash-chained context logs.")
    app.add_typer(audit.app, name="audit", help="Forensic reconstruction from receipts.")
    app.command(name="demo")(demo.demo)
    app.add_typer(pending.approvals_app, name="approvals", help="List, show, approve and deny STEP_UP requests.")
    app.add_typer(pending.deferrals_app, name="deferrals", help="List, show and resolve deferred actions.")
    app.add_typer(tokens.app, name="tokens", help="Create, list and revoke API tokens.")
    app.add_typer(identity.app, name="identity", help="Revoke identities (token ids, subjects, agents).")
    app.add_typer(telemetry.app, name="telemetry", help="Export telemetry events (OCSF, CEF, JSON lines); "
                  "show the spool.")
    app.command(name="serve")(serve.serve)
    app.command(name="gateway")(gateway.gateway)
    app.command(name="calibrate")(calibrate.calibrate)
    app.add_typer(ingest.app, name="ingest", help="Observe agent telemetry (OTLP) and record tool calls as "
                  "observed actions (never blocks).")
    app.add_typer(hook.app, name="hook", help="Vendor hooks: `aarmor hook claude-code` mediates Claude Code's "
                  "tool calls through a running `aarmor serve`.")


def main() -> None:
    """Console entry point."""
    _wire()
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
